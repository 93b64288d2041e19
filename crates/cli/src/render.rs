//! Rendering diagnostics: one place, miette for people, JSON for scripts.

use closeflow_mapping::diag::floor_char_boundary;
use closeflow_mapping::{Diagnostic, Severity};
use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, MietteError,
    MietteSpanContents, Report, SourceCode, SourceSpan, SpanContents,
};

/// Lines longer than this (in characters) are shown as a window around the problem. A label
/// past column 65,535 would otherwise make the renderer panic, and a 100 kB line is no excerpt.
const MAX_LINE: usize = 160;
/// How much of a long line is kept before the problem.
const LEAD: usize = 40;

/// `source` should come with its secrets starred out (`closeflow_mapping::redact`).
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
        let report = match d.span {
            Some(s) => {
                let ex = Excerpt::new(file, source, s.offset, s.len.max(1), s.column);
                let label = format!("line {}, column {}", s.line, s.column);
                md = md.with_label(LabeledSpan::new(Some(label), ex.label_at, ex.label_len));
                Report::new(md).with_source_code(ex)
            }
            None => Report::new(md),
        };
        let _ = handler.render_report(&mut out, report.as_ref());
        out.push('\n');
    }
    out
}

/// The source as shown: very long lines cut to a window, the label's place mapped into it.
struct Excerpt {
    name: String,
    text: String,
    label_at: usize,
    label_len: usize,
    /// The label's true column (1-based), for miette's `file:line:column` header.
    column: usize,
}

impl Excerpt {
    fn new(name: &str, source: &str, offset: usize, len: usize, column: usize) -> Excerpt {
        let offset = offset.min(source.len());
        let len = len.min(source.len() - offset);
        let mut ex = Excerpt {
            name: name.to_string(),
            text: String::new(),
            label_at: offset,
            label_len: len,
            column,
        };
        if source.lines().all(|l| l.len() <= MAX_LINE) {
            ex.text = source.to_string();
            return ex;
        }
        let mut line_start = 0;
        for line in source.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            let ending = &line[body.len()..];
            let here = (line_start..=line_start + body.len()).contains(&offset);
            let chars = body.chars().count();
            if chars <= MAX_LINE {
                if here {
                    ex.label_at = ex.text.len() + (offset - line_start);
                    ex.label_len = len;
                }
                ex.text.push_str(body);
            } else {
                let col = if here {
                    body[..floor_char_boundary(body, offset - line_start)]
                        .chars()
                        .count()
                } else {
                    0
                };
                let first = col.saturating_sub(LEAD).min(chars.saturating_sub(MAX_LINE));
                let from = byte_of(body, first);
                let to = byte_of(body, first + MAX_LINE);
                if first > 0 {
                    ex.text.push('…');
                }
                if here {
                    let at = floor_char_boundary(body, offset - line_start).max(from);
                    ex.label_at = ex.text.len() + (at - from);
                    ex.label_len = len.min(to.saturating_sub(at)).max(1);
                }
                ex.text.push_str(&body[from..to]);
                if to < body.len() {
                    ex.text.push('…');
                }
            }
            if here {
                // A label running on past its line is cut at the line's end.
                let line_end = ex.text.len();
                ex.label_len = ex
                    .label_len
                    .min(line_end.saturating_sub(ex.label_at))
                    .max(1);
            }
            ex.text.push_str(ending);
            line_start += line.len();
        }
        ex.label_at = ex.label_at.min(ex.text.len());
        ex.label_len = ex.label_len.min(ex.text.len() - ex.label_at);
        ex
    }
}

/// The byte offset of character `n` of `s` (its length when `s` is shorter).
fn byte_of(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(b, _)| b)
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner =
            self.text
                .as_str()
                .read_span(span, context_lines_before, context_lines_after)?;
        // The header names the label's place in the file, not in the cut line.
        let column = if span.offset() == self.label_at && context_lines_before == 0 {
            self.column.saturating_sub(1)
        } else {
            inner.column()
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            column,
            inner.line_count(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use closeflow_mapping::diag::Span;

    #[test]
    fn labels_far_out_on_long_lines_render() {
        let source = format!(
            "name: x\ntrigger: {}tratis = 1\nend: 1\n",
            "a".repeat(70_000)
        );
        let offset = source.find("tratis").unwrap();
        let span = Span::from_offset(&source, offset, 6);
        assert!(span.column > 65_535);
        let d = Diagnostic::error("trigger_unknown_field", "unknown field `tratis`").at(span);
        let out = diagnostics("f.yaml", &source, &[d], false);
        assert!(out.contains("tratis"), "{out}");
        assert!(
            out.contains(&format!("line 2, column {}", span.column)),
            "{out}"
        );
        assert!(out.contains(&format!("f.yaml:2:{}", span.column)), "{out}");
        assert!(out.len() < 2_000, "the excerpt is a window, not the line");
        assert!(out.contains('…'));
    }

    #[test]
    fn short_lines_are_shown_as_they_are() {
        let source = "a: 1\nb: [\n";
        let d = Diagnostic::error("yaml_syntax", "x").at(Span::from_offset(source, 5, 1));
        let out = diagnostics("f.yaml", source, &[d], false);
        assert!(out.contains("b: ["), "{out}");
        assert!(!out.contains('…'), "{out}");
    }
}
