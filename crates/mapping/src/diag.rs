//! Load-time problems, collected rather than thrown: every problem of every file is reported in
//! one run (jaq-style), each with a stable code, a byte range and a hint.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// Where in a source file a problem is. Offsets are bytes; line and column are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub column: usize,
}

impl Span {
    /// A span covering `len` bytes from `offset`, with line/column computed from `source`.
    pub fn from_offset(source: &str, offset: usize, len: usize) -> Span {
        // Whole characters only: a span that cuts one cannot be shown (or sliced) later. A
        // parser may count in characters where we count in bytes (a byte order mark, say).
        let end = offset.saturating_add(len).min(source.len());
        let offset = floor_char_boundary(source, offset);
        let mut end = end.max(offset);
        while !source.is_char_boundary(end) {
            end += 1;
        }
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Span {
            offset,
            len: end - offset,
            line,
            column,
        }
    }
}

/// The largest character boundary of `s` at or before byte `i` (`s.len()` past the end).
pub fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Stable diagnostic codes. Scripts match on these; never renumber or reuse one.
pub mod code {
    pub const YAML_SYNTAX: &str = "yaml_syntax";
    pub const WRONG_TYPE: &str = "wrong_type";
    pub const UNKNOWN_KEY: &str = "unknown_key";
    pub const MISSING_KEY: &str = "missing_key";
    pub const TOO_MANY_MAPPINGS: &str = "too_many_mappings";
    pub const DUPLICATE_NAME: &str = "duplicate_name";
    pub const UNKNOWN_ACTION: &str = "unknown_action";
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    pub const UNSET_ENV_VAR: &str = "unset_env_var";
    pub const TRIGGER_SYNTAX: &str = "trigger_syntax";
    pub const TRIGGER_MIXED_AND_OR: &str = "trigger_mixed_and_or";
    pub const TRIGGER_UNKNOWN_FIELD: &str = "trigger_unknown_field";
    pub const TRIGGER_AMBIGUOUS: &str = "trigger_ambiguous";
    pub const TRIGGER_TOO_DEEP: &str = "trigger_too_deep";
    pub const UNKNOWN_DIRECTIVE: &str = "unknown_directive";
    pub const DIRECTIVE_KEYS: &str = "directive_keys";
    pub const DIRECTIVE_ARGS: &str = "directive_args";
    pub const BAD_PATH: &str = "bad_path";
    pub const BAD_TEMPLATE: &str = "bad_template";
    // Mapping test files (`*.test.yaml`).
    pub const UNKNOWN_MAPPING: &str = "unknown_mapping";
    pub const UNKNOWN_STEP: &str = "unknown_step";
    pub const MISSING_FILE: &str = "missing_file";
    pub const BAD_EVENT: &str = "bad_event";
    pub const BAD_STATE: &str = "bad_state";
    // Checks against a Close organisation (`validate --against`).
    pub const UNKNOWN_STATUS: &str = "unknown_status";
    pub const UNKNOWN_CUSTOM_FIELD: &str = "unknown_custom_field";
    pub const CUSTOM_FIELD_VALUE: &str = "custom_field_value";
    pub const BAD_FIELD_KEY: &str = "bad_field_key";
    pub const RESERVED_FIELD_KEY: &str = "reserved_field_key";
    pub const BAD_URL: &str = "bad_url";
    // Warnings.
    pub const KEY_WITHOUT_SETTING: &str = "key_without_setting";
    pub const CUSTOM_FIELD_ID: &str = "custom_field_id";
    pub const DIRECTIVE_TYPO: &str = "directive_typo";
    pub const LITERAL_SECRET: &str = "literal_secret";
    pub const PATH_IN_DIRECTIVE: &str = "path_in_directive";
    pub const DUPLICATE_VALUE: &str = "duplicate_value";
}

/// The hint a diagnostic gets when the place that found the problem has nothing more specific
/// to say: every code comes with one.
pub fn default_hint(code: &str) -> &'static str {
    match code {
        code::YAML_SYNTAX => "check indentation, quotes and colons on this line",
        code::WRONG_TYPE => {
            "check the value's type: text, a number, true/false, a list or a mapping"
        }
        code::UNKNOWN_KEY => "remove it, or check its spelling",
        code::MISSING_KEY => "add the missing key",
        code::DIRECTIVE_ARGS | code::DIRECTIVE_KEYS | code::UNKNOWN_DIRECTIVE => {
            "directives take the reference product's options exactly; see its mapping-kit documentation"
        }
        code::BAD_PATH => "a path is `$.key.key[0]` or a JSONPath (RFC 9535) query",
        code::BAD_TEMPLATE => "placeholders are written `{{traits.name}}`",
        c if c.starts_with("trigger") => {
            "a condition looks like `type = \"identify\"`; join conditions with `and`/`or`"
        }
        _ => "see the README's section on instance files",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            hint: None,
            file: String::new(),
            span: None,
            mapping: None,
        }
    }
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
    pub fn at(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }
    pub fn at_opt(mut self, span: Option<Span>) -> Self {
        self.span = span;
        self
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}", self.file)?;
        if let Some(s) = self.span {
            write!(f, ":{}:{}", s.line, s.column)?;
        }
        write!(f, ": {sev}[{}]", self.code)?;
        if let Some(m) = &self.mapping {
            write!(f, " (mapping \"{m}\")")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;

    #[test]
    fn spans_never_cut_a_character() {
        let src = "\u{feff}sta\u{1}: ɣ";
        for offset in 0..=src.len() + 2 {
            for len in 0..4 {
                let s = Span::from_offset(src, offset, len);
                let end = s.offset + s.len;
                assert!(end <= src.len(), "{offset}+{len}");
                assert!(
                    src.is_char_boundary(s.offset) && src.is_char_boundary(end),
                    "{offset}+{len}: {s:?}"
                );
            }
        }
        assert_eq!(
            Span::from_offset(src, 0, 1).len,
            3,
            "the whole byte order mark"
        );
    }
}
