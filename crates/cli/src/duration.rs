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

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_write_them_and_a_bare_zero_turns_things_off() {
        use std::time::Duration;
        assert_eq!(super::duration("0"), Ok(Duration::ZERO));
        assert_eq!(super::duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(super::duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(super::duration("soon").is_err());
    }
}
