//! An instance's settings → a Close client: which URL (`--close-url`, else the instance's
//! `endpoint`, else Close's own) and which keys (`settings.api_key`: one, or a list of one
//! organisation's). Written once here, for the CLI's commands and the server alike.

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

/// The instance's keys: `settings.api_key`, one or a list (one organisation's).
fn api_keys(inst: &Instance) -> Vec<SecretString> {
    match inst.setting("api_key") {
        Some(Setting::Plain(k)) => vec![k.clone().into()],
        Some(s) => s.secrets().into_iter().cloned().collect(),
        None => Vec::new(),
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
    let mut keys = api_keys(inst).into_iter();
    let first = keys.next().ok_or_else(|| ConnectError::NoApiKey {
        instance: inst.name.clone(),
    })?;
    Ok(ClientConfig::new(url, first).with_more_keys(keys))
}

/// Whether two versions of an instance talk to the same Close with the same keys and look up
/// by the same fields: then a reload may keep the running client (its pacing), lookup cache
/// and record holds.
pub fn same_connection(old: &Instance, new: &Instance, close_url: Option<&str>) -> bool {
    let url = |i: &Instance| base_url(i, close_url);
    let key = |i: &Instance| {
        let mut keys: Vec<String> = api_keys(i)
            .iter()
            .map(|k| k.expose_secret().to_string())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    };
    url(old) == url(new)
        && key(old) == key(new)
        && closeflow_close::run::key_config(old) == closeflow_close::run::key_config(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(api_key: &str) -> Instance {
        let src = format!(
            "name: x\nendpoint: http://127.0.0.1:9/api/v1/\nsettings:\n  api_key: {api_key}\nmappings: []\n"
        );
        let env = |v: &str| v.strip_prefix("KEY_").map(|k| format!("api_{k}_S3CRET"));
        let (inst, diags) = closeflow_mapping::instance::load(
            "x.yaml",
            &src,
            &closeflow_close::schema::destination(),
            &env,
        );
        inst.unwrap_or_else(|| panic!("{diags:?}"))
    }

    #[test]
    fn a_list_of_keys_makes_one_client_over_them_all() {
        let one = client_config(&instance("${KEY_A}"), None).unwrap();
        assert_eq!(one.key_count(), 1);
        let three = instance("[\"${KEY_A}\", \"${KEY_B}\", \"${KEY_C}\"]");
        let cfg = client_config(&three, None).unwrap();
        assert_eq!(cfg.key_count(), 3);
        assert!(!format!("{cfg:?} {three:?}").contains("S3CRET"));
    }

    #[test]
    fn the_same_keys_in_another_order_are_the_same_connection() {
        let abc = instance("[\"${KEY_A}\", \"${KEY_B}\", \"${KEY_C}\"]");
        let cab = instance("[\"${KEY_C}\", \"${KEY_A}\", \"${KEY_B}\"]");
        let ab = instance("[\"${KEY_A}\", \"${KEY_B}\"]");
        let a = instance("${KEY_A}");
        let a_list = instance("[\"${KEY_A}\"]");
        assert!(same_connection(&abc, &cab, None));
        assert!(!same_connection(&abc, &ab, None));
        assert!(!same_connection(&ab, &a, None));
        assert!(same_connection(&a, &a_list, None));
    }
}
