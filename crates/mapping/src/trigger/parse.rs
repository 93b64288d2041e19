//! The trigger parser: a recursive descent over `lex`'s tokens into the `Node` tree, refusing
//! (with a code, a place and a hint) what the reference would read surprisingly.

use super::lex::{Kind, Tok, lex};
use super::{
    Base, Cond, EXTENSION, Field, MAX_DEPTH, NESTED, Node, Op, TOP, Trigger, TriggerError, err,
};
use crate::diag::code;
use crate::js;
use crate::suggest;

/// Parses a whole trigger: one expression and nothing after it.
pub(super) fn parse(source: &str) -> Result<Trigger, TriggerError> {
    let tokens = lex(source)?;
    let mut p = Parser {
        src: source,
        toks: tokens,
        pos: 0,
        depth: 0,
    };
    if p.toks.is_empty() {
        return Err(err(
            code::TRIGGER_SYNTAX,
            "the trigger is empty",
            Some("e.g. type = \"identify\""),
            0,
            0,
        ));
    }
    let root = p.expr()?;
    if let Some(t) = p.peek() {
        return Err(err(
            code::TRIGGER_SYNTAX,
            format!(
                "unexpected {} after a complete condition",
                t.kind.describe()
            ),
            Some("join conditions with `and` / `or`"),
            t.start,
            t.len,
        ));
    }
    Ok(Trigger {
        source: source.to_string(),
        root,
    })
}

/// The length in the source of a path's first segment: up to its first unescaped `.` (the
/// decoded name is shorter wherever `\\` escaped something).
fn first_segment_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '.' => return i,
            _ => {}
        }
    }
    text.len()
}

// ---- parser ----

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Tok>,
    pos: usize,
    /// Open groups (`(` and `!(`) around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn end_pos(&self) -> usize {
        self.src.len()
    }
    fn expect(&mut self, want: &Kind, what: &str) -> Result<Tok, TriggerError> {
        match self.next() {
            Some(t) if &t.kind == want => Ok(t),
            Some(t) => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected {what}, found {}", t.kind.describe()),
                Some(&expect_hint(want)),
                t.start,
                t.len,
            )),
            None => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected {what}, but the trigger ends here"),
                Some(&expect_hint(want)),
                self.end_pos(),
                0,
            )),
        }
    }

    fn expr(&mut self) -> Result<Node, TriggerError> {
        let mut items = vec![self.term()?];
        let mut conn: Option<Kind> = None;
        while let Some(t) = self.peek() {
            let k = t.kind.clone();
            if k != Kind::And && k != Kind::Or {
                break;
            }
            let (start, len) = (t.start, t.len);
            if let Some(c) = &conn {
                if *c != k {
                    return Err(err(
                        code::TRIGGER_MIXED_AND_OR,
                        "`and` and `or` are mixed without parentheses",
                        Some(
                            "add parentheses, e.g. `(a and b) or c`; the reference product would read `a and b or c` as `a or b or c`",
                        ),
                        start,
                        len,
                    ));
                }
            } else {
                conn = Some(k.clone());
            }
            self.pos += 1;
            items.push(self.term()?);
        }
        Ok(match conn {
            None => items.pop().unwrap_or(Node::All(vec![])),
            Some(Kind::Or) => Node::Any(items),
            Some(_) => Node::All(items),
        })
    }

    /// A parenthesised group whose `(` was just read (`opener` is the `(` or the `!` of `!(`).
    /// Nesting is capped: parsing, printing and evaluating recurse once per level, and a
    /// trigger thousands of levels deep would otherwise overflow the stack.
    fn group(&mut self, opener: &Tok) -> Result<Node, TriggerError> {
        if self.depth >= MAX_DEPTH {
            return Err(err(
                code::TRIGGER_TOO_DEEP,
                format!("groups are nested more than {MAX_DEPTH} levels deep"),
                Some(
                    "flatten the expression: `a and (b and c)` is `a and b and c`, and `!(!(x))` is `x`",
                ),
                opener.start,
                opener.len,
            ));
        }
        self.depth += 1;
        let inner = self.expr()?;
        self.expect(&Kind::RParen, "`)`")?;
        self.depth -= 1;
        Ok(inner)
    }

    fn term(&mut self) -> Result<Node, TriggerError> {
        let Some(t) = self.next() else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                "expected a condition, but the trigger ends here",
                Some(
                    "a condition looks like `type = \"identify\"`; remove the trailing `and`/`or`/`!`",
                ),
                self.end_pos(),
                0,
            ));
        };
        match &t.kind {
            Kind::LParen => self.group(&t),
            Kind::Bang => match self.peek().map(|t| t.kind.clone()) {
                Some(Kind::LParen) => {
                    self.pos += 1;
                    Ok(Node::Not(Box::new(self.group(&t)?)))
                }
                Some(Kind::Ident(p)) if is_function(&p) => {
                    let f = self.next().ok_or_else(|| {
                        err(
                            code::TRIGGER_SYNTAX,
                            "expected a function",
                            Some("`!` negates contains(…), match(…) or a parenthesised group"),
                            t.start,
                            1,
                        )
                    })?;
                    self.function(&f, true, t.start)
                }
                _ => Err(err(
                    code::TRIGGER_AMBIGUOUS,
                    "`!` can only negate a function or a parenthesised group",
                    Some(
                        "write `!(field = \"x\")` or `field != \"x\"`; the reference product silently ignores a `!` here",
                    ),
                    t.start,
                    1,
                )),
            },
            Kind::Ident(p)
                if is_function(p) && matches!(self.peek().map(|t| &t.kind), Some(Kind::LParen)) =>
            {
                self.function(&t, false, t.start)
            }
            Kind::Ident(_) => self.comparison(&t),
            other => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected a condition, found {}", other.describe()),
                Some("a condition looks like `type = \"identify\"`"),
                t.start,
                t.len,
            )),
        }
    }

    fn field(&self, t: &Tok) -> Result<Field, TriggerError> {
        let Kind::Ident(segs) = &t.kind else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected a field, found {}", t.kind.describe()),
                Some(
                    "fields are `type`, `event`, `name`, `userId` or paths under `properties.`, `traits.`, `context.`",
                ),
                t.start,
                t.len,
            ));
        };
        let first = segs[0].as_str();
        let keys: Vec<String> = segs[1..].to_vec();
        if let Some(top) = TOP.iter().find(|k| **k == first) {
            if !keys.is_empty() {
                return Err(err(
                    code::TRIGGER_UNKNOWN_FIELD,
                    format!("`{first}` is text and has no fields below it"),
                    Some(
                        "the reference product would silently compare the whole field; remove the `.…` part",
                    ),
                    t.start,
                    t.len,
                ));
            }
            return Ok(Field {
                base: Base::Top(top),
                keys,
            });
        }
        if NESTED.contains(&first) {
            if keys.is_empty() {
                return Err(err(
                    code::TRIGGER_UNKNOWN_FIELD,
                    format!("`{first}` needs a path below it"),
                    Some(&format!("e.g. `{first}.plan`")),
                    t.start,
                    t.len,
                ));
            }
            return Ok(Field {
                base: Base::Nested(first.to_string()),
                keys,
            });
        }
        if EXTENSION.contains(&first) {
            return Ok(Field {
                base: Base::Nested(first.to_string()),
                keys,
            });
        }
        let all: Vec<&str> = TOP.iter().chain(NESTED).chain(EXTENSION).copied().collect();
        let hint = suggest::hint(first, &all).unwrap_or_else(|| {
            "fields are `type`, `event`, `name`, `userId`, paths under `properties.`, `traits.`, `context.`, or another top-level event field such as `anonymousId`".into()
        });
        Err(err(
            code::TRIGGER_UNKNOWN_FIELD,
            format!("unknown field `{first}`"),
            Some(&hint),
            t.start,
            first_segment_len(&self.src[t.start..t.start + t.len]),
        ))
    }

    fn value_tok(&mut self, after: &Tok) -> Result<Tok, TriggerError> {
        match self.next() {
            Some(v) => {
                if let Kind::SingleStr(s) = &v.kind {
                    return Err(err(
                        code::TRIGGER_AMBIGUOUS,
                        format!("single-quoted text '{s}'"),
                        Some(&format!(
                            "use double quotes: \"{s}\"; the reference product keeps single quotes as part of the text, so this would never match"
                        )),
                        v.start,
                        v.len,
                    ));
                }
                Ok(v)
            }
            None => Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected a value after {}", after.kind.describe()),
                Some("e.g. `= \"identify\"`"),
                self.end_pos(),
                0,
            )),
        }
    }

    fn comparison(&mut self, ft: &Tok) -> Result<Node, TriggerError> {
        let field = self.field(ft)?;
        let op_tok = self.next().ok_or_else(|| {
            err(
                code::TRIGGER_SYNTAX,
                format!("expected an operator after {}", ft.kind.describe()),
                Some("operators: = != < <= > >="),
                self.end_pos(),
                0,
            )
        })?;
        let Kind::Cmp(op) = op_tok.kind else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                format!("expected an operator, found {}", op_tok.kind.describe()),
                Some("operators: = != < <= > >="),
                op_tok.start,
                op_tok.len,
            ));
        };
        let vt = self.value_tok(&op_tok)?;
        let span = (ft.start, vt.start + vt.len - ft.start);
        let is_top = matches!(field.base, Base::Top(_));
        let text_only = matches!(field.base, Base::Top("type" | "event"));
        let refuse = |msg: String, hint: String| {
            Err(err(
                code::TRIGGER_AMBIGUOUS,
                msg,
                Some(&hint),
                span.0,
                span.1,
            ))
        };
        let fname = field.to_string();
        let op = match (op, &vt.kind) {
            ("=" | "!=", Kind::Str(s)) => {
                if op == "=" {
                    Op::StrEq(s.clone())
                } else {
                    Op::StrNe(s.clone())
                }
            }
            ("=" | "!=", Kind::Ident(w)) if w.len() == 1 && w[0] == "null" => {
                if text_only {
                    return refuse(
                        format!(
                            "`{fname} {op} null` compares with the text \"null\" in the reference product"
                        ),
                        format!(
                            "`{fname}` is always present on a valid event; compare it with a quoted value"
                        ),
                    );
                }
                if op == "=" { Op::NotExists } else { Op::Exists }
            }
            ("=", Kind::Ident(w)) if w.len() == 1 && (w[0] == "true" || w[0] == "false") => {
                if text_only || matches!(field.base, Base::Top("name")) {
                    return refuse(
                        format!(
                            "`{fname} = {}` compares with the text \"{}\" in the reference product",
                            w[0], w[0]
                        ),
                        format!("write `{fname} = \"{}\"` if you mean the text", w[0]),
                    );
                }
                if w[0] == "true" {
                    Op::IsTrue
                } else {
                    Op::IsFalse
                }
            }
            ("!=", Kind::Ident(w)) if w.len() == 1 && (w[0] == "true" || w[0] == "false") => {
                return refuse(
                    format!(
                        "`{fname} != {}` compares with the text \"{}\" in the reference product, so it holds even when the value is {}",
                        w[0], w[0], w[0]
                    ),
                    format!(
                        "write `!({fname} = {})` (not {} or missing) or `{fname} = {}`",
                        w[0],
                        w[0],
                        if w[0] == "true" { "false" } else { "true" }
                    ),
                );
            }
            ("=" | "!=", Kind::Ident(w)) => {
                let word = w.join(".");
                if op == "=" {
                    Op::StrEq(word)
                } else {
                    Op::StrNe(word)
                }
            }
            ("=" | "!=", Kind::Num(n)) => {
                if is_top {
                    return refuse(
                        format!("`{fname} {op} {n}` compares as text in the reference product"),
                        format!("write `{fname} {op} \"{n}\"`"),
                    );
                }
                let x = js::js_number_of_str(n);
                if op == "=" {
                    Op::NumEq(x)
                } else {
                    Op::NumNe(x)
                }
            }
            (cmp, Kind::Num(n) | Kind::Str(n)) => {
                let x = js::js_number_of_str(n);
                if x.is_nan() {
                    return refuse(
                        format!("`{cmp}` needs a number, got \"{n}\""),
                        "compare with a number, e.g. `properties.total > 50`".into(),
                    );
                }
                match cmp {
                    "<" => Op::Lt(x),
                    "<=" => Op::Le(x),
                    ">" => Op::Gt(x),
                    _ => Op::Ge(x),
                }
            }
            (cmp, Kind::Ident(w)) => {
                let word = w.join(".");
                let hint = match word.as_str() {
                    "null" => format!(
                        "to test presence write `{fname} != null`; to compare, use a number, e.g. `{fname} {cmp} 0`"
                    ),
                    "true" | "false" => {
                        format!("to test a boolean write `{fname} = {word}`")
                    }
                    _ => format!("compare with a number, e.g. `{fname} {cmp} 10`"),
                };
                return refuse(
                    format!("`{cmp}` compares numbers, and `{word}` is not one"),
                    hint,
                );
            }
            (cmp, other) => {
                return Err(err(
                    code::TRIGGER_SYNTAX,
                    format!("expected a value after `{cmp}`, found {}", other.describe()),
                    Some(if cmp == "=" || cmp == "!=" {
                        "values are \"text\", numbers, true, false or null"
                    } else {
                        "`<`, `<=`, `>` and `>=` compare with a number, e.g. `properties.total > 50`"
                    }),
                    vt.start,
                    vt.len,
                ));
            }
        };
        Ok(Node::Cond(Cond { field, op, span }))
    }

    fn function(
        &mut self,
        name_tok: &Tok,
        negate: bool,
        start: usize,
    ) -> Result<Node, TriggerError> {
        let Kind::Ident(n) = &name_tok.kind else {
            return Err(err(
                code::TRIGGER_SYNTAX,
                "expected a function",
                Some("functions are contains(…) and match(…)"),
                name_tok.start,
                name_tok.len,
            ));
        };
        let name = n[0].clone();
        self.expect(&Kind::LParen, "`(`")?;
        let ft = self.next().ok_or_else(|| {
            err(
                code::TRIGGER_SYNTAX,
                format!("{name}() is missing a 1st argument"),
                Some(&format!("write {name}(field, \"text\")")),
                self.end_pos(),
                0,
            )
        })?;
        let field = self.field(&ft)?;
        let comma = self.expect(&Kind::Comma, "`,`")?;
        let vt = self.value_tok(&comma)?;
        let close = self.expect(&Kind::RParen, "`)`")?;
        let span = (start, close.start + 1 - start);
        let text = match &vt.kind {
            Kind::Str(s) => s.clone(),
            Kind::Num(n) => js::js_float(js::js_number_of_str(n)),
            Kind::Ident(w) => w.join("."),
            other => {
                return Err(err(
                    code::TRIGGER_SYNTAX,
                    format!("expected a value, found {}", other.describe()),
                    Some(&format!(
                        "the second argument of {name}() is text in double quotes"
                    )),
                    vt.start,
                    vt.len,
                ));
            }
        };
        let op = if name == "contains" {
            if negate {
                Op::NotContains(text)
            } else {
                Op::Contains(text)
            }
        } else {
            let stars = text.matches('*').count();
            if text == "*" || (stars == 1 && text.ends_with('*')) {
                let p = text[..text.len() - 1].to_string();
                if negate {
                    Op::NotStartsWith(p)
                } else {
                    Op::StartsWith(p)
                }
            } else if stars == 1 && text.starts_with('*') {
                let p = text[1..].to_string();
                if negate {
                    Op::NotEndsWith(p)
                } else {
                    Op::EndsWith(p)
                }
            } else {
                return Err(err(
                    code::TRIGGER_AMBIGUOUS,
                    format!("match() takes \"prefix*\" or \"*suffix\", got \"{text}\""),
                    Some(
                        "the reference product reads any other pattern as an odd suffix test; use `=` for equality or contains() for a substring",
                    ),
                    vt.start,
                    vt.len,
                ));
            }
        };
        Ok(Node::Cond(Cond { field, op, span }))
    }
}

fn expect_hint(want: &Kind) -> String {
    match want {
        Kind::RParen => "every `(` needs a matching `)`".into(),
        Kind::LParen => {
            "functions are called as contains(field, \"text\") or match(field, \"x*\")".into()
        }
        Kind::Comma => {
            "functions take a field and a value: contains(traits.email, \"@acme.com\")".into()
        }
        other => format!("{} is expected here", other.describe()),
    }
}

fn is_function(p: &[String]) -> bool {
    p.len() == 1 && (p[0] == "contains" || p[0] == "match")
}
