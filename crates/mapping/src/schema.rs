//! What a destination tells the engine about itself: its settings and its actions' fields and
//! defaults. The engine knows no destination; the Close action hands this over.

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct DestinationSchema {
    pub name: &'static str,
    pub settings: Vec<SettingSpec>,
    pub actions: Vec<ActionSchema>,
}

#[derive(Debug, Clone)]
pub struct SettingSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// Never echoed back; a literal value in a file draws a warning.
    pub secret: bool,
    /// A secret setting that may also be a list of values ([`crate::instance::Setting::Secrets`]).
    pub list: bool,
}

#[derive(Debug, Clone)]
pub struct ActionSchema {
    pub name: &'static str,
    pub description: &'static str,
    pub default_trigger: &'static str,
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Boolean,
    Object,
}

/// A check of an object field's key: `Err` says why the key is refused.
pub type KeyCheck = fn(&str) -> Result<(), String>;

#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: &'static str,
    pub label: &'static str,
    pub description: &'static str,
    pub kind: FieldKind,
    /// The default mapping (a value in the instance-file syntax), used when a mapping leaves
    /// the field out.
    pub default: Option<Value>,
    /// A setting that must be filled for this field to have any effect (warned about otherwise).
    pub requires_setting: Option<&'static str>,
    /// For object fields: the prefixes their keys should carry (warned about otherwise).
    pub key_prefixes: &'static [&'static str],
    /// For object fields: a check of each key written literally in a mapping; `Err` (why) is a
    /// config error. The destination applies the same check to keys computed at run time.
    pub key_check: Option<KeyCheck>,
    /// For object fields: settings whose values may not be used as keys (the field they name is
    /// owned by another field of the action), each with the field that owns it.
    pub reserved_keys: &'static [(&'static str, &'static str)],
}

impl DestinationSchema {
    pub fn action(&self, name: &str) -> Option<&ActionSchema> {
        self.actions.iter().find(|a| a.name == name)
    }
    pub fn setting(&self, name: &str) -> Option<&SettingSpec> {
        self.settings.iter().find(|s| s.name == name)
    }
}

impl ActionSchema {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}
