//! The Close destination as the mapping engine sees it: settings, the action's 17 fields and
//! the reference product's default mapping.

use closeflow_mapping::schema::{
    ActionSchema, DestinationSchema, FieldKind, FieldSpec, SettingSpec,
};
use serde_json::{Value, json};

pub const ACTION: &str = "create_or_update_contact_and_lead";
pub const COMPANY_SETTING: &str = "lead_custom_field_id_for_company_id";
pub const USER_SETTING: &str = "contact_custom_field_id_for_user_id";
const CF_PREFIXES: &[&str] = &["cf_", "lcf_", "ccf_"];
/// The lookup-key fields are owned by `lead_external_id` and `contact_external_id`.
const RESERVED_KEYS: &[(&str, &str)] = &[
    (COMPANY_SETTING, "lead_external_id"),
    (USER_SETTING, "contact_external_id"),
];

fn field(
    name: &'static str,
    label: &'static str,
    kind: FieldKind,
    description: &'static str,
    default: Option<Value>,
) -> FieldSpec {
    FieldSpec {
        name,
        label,
        description,
        kind,
        default,
        requires_setting: None,
        key_prefixes: if kind == FieldKind::Object {
            CF_PREFIXES
        } else {
            &[]
        },
        key_check: (kind == FieldKind::Object)
            .then_some(|k: &str| crate::payload::custom_key(k).map(|_| ())),
        reserved_keys: if kind == FieldKind::Object {
            RESERVED_KEYS
        } else {
            &[]
        },
    }
}

pub fn destination() -> DestinationSchema {
    use FieldKind::{Boolean, Object, String as Text};
    let p = |path: &str| Some(json!({"@path": path}));
    let mut fields = vec![
        field(
            "lead_name",
            "Lead Name",
            Text,
            "The name of the Lead.",
            p("$.traits.company.name"),
        ),
        field(
            "lead_external_id",
            "Lead Company ID",
            Text,
            "Your ID that identifies the Lead; needs the setting lead_custom_field_id_for_company_id.",
            p("$.traits.company.id"),
        ),
        field(
            "lead_description",
            "Lead Description",
            Text,
            "Description of the Lead.",
            None,
        ),
        field(
            "lead_status_id",
            "Lead Status ID",
            Text,
            "ID of the Lead Status (stat_…).",
            None,
        ),
        field(
            "lead_custom_fields",
            "Lead Custom Fields",
            Object,
            "Custom Fields to set on the Lead; keys are custom field ids (cf_…).",
            None,
        ),
        field(
            "contact_name",
            "Contact Name",
            Text,
            "The name of the Contact.",
            p("$.traits.name"),
        ),
        field(
            "contact_email",
            "Contact Email",
            Text,
            "Used to look up the Contact when no User ID matches; appended when the Contact has other addresses.",
            p("$.traits.email"),
        ),
        field(
            "contact_phone",
            "Contact Phone",
            Text,
            "Appended when the Contact has other numbers.",
            p("$.traits.phone"),
        ),
        field(
            "contact_url",
            "Contact URL",
            Text,
            "Appended when the Contact has other URLs.",
            p("$.traits.website"),
        ),
        field(
            "contact_title",
            "Contact Title",
            Text,
            "The title of the Contact.",
            p("$.traits.title"),
        ),
        field(
            "contact_external_id",
            "Contact User ID",
            Text,
            "Your ID that identifies the Contact; needs the setting contact_custom_field_id_for_user_id.",
            p("$.userId"),
        ),
        field(
            "contact_custom_fields",
            "Contact Custom Fields",
            Object,
            "Custom Fields to set on the Contact; keys are custom field ids (cf_…).",
            None,
        ),
        field(
            "allow_creating_new_leads",
            "Allow creating new Leads",
            Boolean,
            "Whether new Leads may be created (default true).",
            None,
        ),
        field(
            "allow_updating_existing_leads",
            "Allow updating existing Leads",
            Boolean,
            "Whether existing Leads may be updated (default true).",
            None,
        ),
        field(
            "allow_creating_new_contacts",
            "Allow creating new Contacts",
            Boolean,
            "Whether new Contacts may be created (default true).",
            None,
        ),
        field(
            "allow_updating_existing_contacts",
            "Allow updating existing Contacts",
            Boolean,
            "Whether existing Contacts may be updated (default true).",
            None,
        ),
        field(
            "allow_creating_duplicate_contacts",
            "Allow creating duplicate Contacts under different Lead",
            Boolean,
            "Whether a Contact with the same email or User ID may be created under a different Lead (default true).",
            None,
        ),
    ];
    for f in &mut fields {
        f.requires_setting = match f.name {
            "lead_external_id" => Some(COMPANY_SETTING),
            "contact_external_id" => Some(USER_SETTING),
            _ => None,
        };
    }
    DestinationSchema {
        name: "Close",
        settings: vec![
            SettingSpec {
                name: "api_key",
                description: "Your Close API key (read it from the environment: ${CLOSE_API_KEY}), or a list of one organisation's keys to spread requests over.",
                required: true,
                secret: true,
                list: true,
            },
            SettingSpec {
                name: USER_SETTING,
                description: "Contact custom field (cf_…, text) holding the User ID.",
                required: false,
                secret: false,
                list: false,
            },
            SettingSpec {
                name: COMPANY_SETTING,
                description: "Lead custom field (cf_…, text) holding the Company ID.",
                required: false,
                secret: false,
                list: false,
            },
        ],
        actions: vec![ActionSchema {
            name: ACTION,
            description: "Create or Update Contact and Lead",
            default_trigger: "type = \"identify\"",
            fields,
        }],
    }
}
