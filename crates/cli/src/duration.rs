//! Durations on the command line, written as people write them; shared by every command's
//! flags (`serve`, `send`'s lookup flags, `capture`), so no command module imports another for it.

use std::time::Duration;

/// A duration written as people write them: `500ms`, `30s`, `10m`, `4h`, `24h`, `1h 30m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a duration such as 30s, 10m or 24h ({e})"))?;
    d.try_into()
        .map_err(|_| format!("`{s}` is negative; a duration here is positive"))
}

/// A duration flag that shows its default as people write it (`24h`, not `86400s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let units = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
        match units.iter().find(|(u, _)| ms > 0 && ms.is_multiple_of(*u)) {
            Some((u, name)) => write!(f, "{}{name}", ms / u),
            None if ms == 0 => f.write_str("0"),
            None => write!(f, "{ms}ms"),
        }
    }
}

pub fn span(s: &str) -> Result<Span, String> {
    duration(s).map(Span)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_duration_is_shown_as_people_write_it() {
        use super::Span;
        use std::time::Duration;
        assert_eq!(Span(Duration::from_secs(24 * 3600)).to_string(), "24h");
        assert_eq!(Span(Duration::from_secs(600)).to_string(), "10m");
        assert_eq!(Span(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(Span(Duration::from_millis(5)).to_string(), "5ms");
        assert_eq!(Span(Duration::ZERO).to_string(), "0");
        for d in ["24h", "10m", "90s", "5ms", "0"] {
            assert_eq!(super::span(d).unwrap().to_string(), d, "{d} reads back");
        }
    }

    #[test]
    fn durations_read_as_people_write_them_and_a_bare_zero_turns_things_off() {
        use std::time::Duration;
        assert_eq!(super::duration("0"), Ok(Duration::ZERO));
        assert_eq!(super::duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(super::duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(super::duration("soon").is_err());
    }
}
