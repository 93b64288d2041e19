//! An instance's settings → a Close client: which URL (`--close-url`, else the instance's
//! `endpoint`, else Close's own) and which key (`settings.api_key`). Written once here, for the
//! CLI's commands and the server alike.

use crate::client::{ClientConfig, CloseError, DEFAULT_BASE_URL, check_base_url};
use closeflow_mapping::Instance;
use closeflow_mapping::instance::Setting;
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("instance {instance} has no settings.api_key")]
    NoApiKey { instance: String },
    #[error(transparent)]
    Close(#[from] CloseError),
}

/// The Close URL an instance talks to: the override, else its `endpoint`, else Close's.
fn base_url(inst: &Instance, close_url: Option<&str>) -> String {
    close_url
        .map(str::to_string)
        .or_else(|| inst.endpoint.clone())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
}

fn api_key(inst: &Instance) -> Option<SecretString> {
    match inst.setting("api_key") {
        Some(Setting::Secret(k)) => Some(k.clone()),
        Some(Setting::Plain(k)) => Some(k.clone().into()),
        None => None,
    }
}

/// The client configuration for an instance (the URL checked, the key required), with the
/// client's default timeouts and retries for the caller to adjust.
pub fn client_config(
    inst: &Instance,
    close_url: Option<&str>,
) -> Result<ClientConfig, ConnectError> {
    let url = base_url(inst, close_url);
    check_base_url(&url)?;
    let key = api_key(inst).ok_or_else(|| ConnectError::NoApiKey {
        instance: inst.name.clone(),
    })?;
    Ok(ClientConfig::new(url, key))
}

/// Whether two versions of an instance talk to the same Close with the same key and look up
/// by the same fields: then a reload may keep the running client (its pacing), lookup cache
/// and record holds.
pub fn same_connection(old: &Instance, new: &Instance, close_url: Option<&str>) -> bool {
    let url = |i: &Instance| base_url(i, close_url);
    let key = |i: &Instance| api_key(i).map(|k| k.expose_secret().to_string());
    url(old) == url(new)
        && key(old) == key(new)
        && closeflow_close::run::key_config(old) == closeflow_close::run::key_config(new)
}
