//! Rendering diagnostics: one place, miette for people, JSON for scripts.

use closeflow_mapping::{Diagnostic, Severity};
use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Report,
};

pub fn diagnostics(file: &str, source: &str, diags: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in diags {
        let mut text = match &d.mapping {
            Some(m) => format!("{} (mapping \"{m}\")", d.message),
            None => d.message.clone(),
        };
        if d.span.is_none() {
            // Without a span miette shows no file name; say it in the message.
            text = format!("{file}: {text}");
        }
        let mut md =
            MietteDiagnostic::new(text)
                .with_code(d.code)
                .with_severity(match d.severity {
                    Severity::Error => miette::Severity::Error,
                    Severity::Warning => miette::Severity::Warning,
                });
        if let Some(h) = &d.hint {
            md = md.with_help(h.clone());
        }
        if let Some(s) = d.span {
            let label = format!("line {}, column {}", s.line, s.column);
            md = md.with_label(LabeledSpan::new(
                Some(label),
                s.offset,
                s.len.max(1).min(source.len().saturating_sub(s.offset)),
            ));
        }
        let report = Report::new(md).with_source_code(NamedSource::new(file, source.to_string()));
        let _ = handler.render_report(&mut out, report.as_ref());
        out.push('\n');
    }
    out
}
