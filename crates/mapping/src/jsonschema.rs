//! The JSON Schema of instance files, generated from the destination's schema so that editors
//! can complete and check them (`cargo xtask schema` writes it to `schema/instance.schema.json`).

use crate::instance::MAX_MAPPINGS;
use crate::schema::{DestinationSchema, FieldKind};
use serde_json::{Map, Value, json};

pub fn instance_schema(d: &DestinationSchema) -> Value {
    let mut settings = Map::new();
    for s in &d.settings {
        let one = if s.list && s.secret {
            json!({"description": s.description,
                   "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]})
        } else {
            json!({"type": "string", "description": s.description})
        };
        settings.insert(s.name.to_string(), one);
    }
    let required_settings: Vec<&str> = d
        .settings
        .iter()
        .filter(|s| s.required)
        .map(|s| s.name)
        .collect();
    let mut action_variants = Vec::new();
    for a in &d.actions {
        let mut fields = Map::new();
        for f in &a.fields {
            let literal = match f.kind {
                FieldKind::String => json!({"type": ["string", "number", "boolean", "null"]}),
                FieldKind::Boolean => json!({"type": ["boolean", "string", "null"]}),
                FieldKind::Object => {
                    json!({"type": "object", "additionalProperties": {"$ref": "#/$defs/value"}})
                }
            };
            let mut desc = format!("{}: {}", f.label, f.description);
            if let Some(def) = &f.default {
                desc.push_str(&format!(" Default: {def}."));
            }
            fields.insert(
                f.name.to_string(),
                json!({"description": desc, "anyOf": [literal, {"$ref": "#/$defs/directive"}]}),
            );
        }
        action_variants.push(json!({
            "if": {"properties": {"action": {"const": a.name}}},
            "then": {"properties": {"fields": {"type": "object", "additionalProperties": false, "properties": fields}}}
        }));
    }
    let actions: Vec<&str> = d.actions.iter().map(|a| a.name).collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://closeflow.dev/schema/instance.schema.json",
        "title": format!("closeflow instance file ({})", d.name),
        "description": "One destination instance: its settings and its mappings (at most 50).",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "settings", "mappings"],
        "properties": {
            "name": {"type": "string", "description": "Unique across instances."},
            "write_key": {"description": "What senders authenticate with at `closeflow serve` (one key, or a list: one per connected source); use ${VAR} to read it from the environment.",
                          "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
            "endpoint": {"type": "string", "format": "uri", "description": "The Close API base URL; a simulator's URL for local trials."},
            "settings": {
                "type": "object",
                "additionalProperties": false,
                "required": required_settings,
                "properties": settings
            },
            "mappings": {
                "type": "array",
                "maxItems": MAX_MAPPINGS,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "action"],
                    "properties": {
                        "name": {"type": "string", "description": "Unique within the instance."},
                        "enabled": {"type": "boolean", "default": true},
                        "trigger": {"type": "string", "description": "e.g. type = \"identify\"; the action's default when left out."},
                        "action": {"enum": actions},
                        "fields": {"type": "object"}
                    },
                    "allOf": action_variants
                }
            }
        },
        "$defs": {
            "directive": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "propertyNames": {"enum": crate::value::DIRECTIVES}
            },
            "value": {}
        }
    })
}
