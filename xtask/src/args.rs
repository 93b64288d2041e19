//! The benches' command-line options (`--events N`, `--generate DIR`, …): one reading of them,
//! so every bench accepts numbers the same way (`10_000` as well as `10000`) and refuses a flag
//! without its value the same way.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// The value after `name`, if `name` is given; an error when nothing follows it.
pub fn value<'a>(args: &[&'a str], name: &str) -> Result<Option<&'a str>> {
    match args.iter().position(|a| *a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .copied()
            .map(Some)
            .with_context(|| format!("{name} takes a value")),
    }
}

/// The number after `name` (underscores allowed), or `default` when `name` is not given.
pub fn number(args: &[&str], name: &str, default: usize) -> Result<usize> {
    value(args, name)?.map_or(Ok(default), |v| {
        v.replace('_', "")
            .parse()
            .with_context(|| format!("{name} takes a number"))
    })
}

/// The directory after `name`, if `name` is given.
pub fn dir(args: &[&str], name: &str) -> Result<Option<PathBuf>> {
    Ok(value(args, name)?.map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_directories_and_missing_values() {
        let args = ["--events", "10_000", "--generate", "out", "--seed"];
        assert_eq!(number(&args, "--events", 5).unwrap(), 10_000);
        assert_eq!(number(&args, "--leads", 5).unwrap(), 5);
        assert_eq!(
            dir(&args, "--generate").unwrap(),
            Some(PathBuf::from("out"))
        );
        assert!(number(&args, "--seed", 7).is_err());
        assert!(number(&["--events", "many"], "--events", 1).is_err());
    }
}
