//! A minimal `--key value` / `--key=value` / `--flag` command-line parser.

use std::collections::HashMap;
use std::str::FromStr;

pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// `valued`: options that take a value; `switches`: options that don't.
    pub fn parse(argv: &[String], valued: &[&str], switches: &[&str]) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let Some(opt) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument `{a}`"));
            };
            let (key, inline) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (opt, None),
            };
            if valued.contains(&key) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| format!("--{key} needs a value"))?
                        .clone(),
                };
                values.insert(key.to_string(), v);
            } else if switches.contains(&key) {
                if inline.is_some() {
                    return Err(format!("--{key} takes no value"));
                }
                flags.push(key.to_string());
            } else {
                return Err(format!("unknown option --{key}"));
            }
        }
        Ok(Args { values, flags })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn str_or(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    pub fn required(&self, key: &str) -> Result<&str, String> {
        self.get(key).ok_or_else(|| format!("--{key} is required"))
    }

    pub fn num<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("--{key}: `{v}` is not a valid number")),
        }
    }

    pub fn opt_num<T: FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .replace('_', "")
                .parse()
                .map(Some)
                .map_err(|_| format!("--{key}: `{v}` is not a valid number")),
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_forms() {
        let a = Args::parse(
            &v(&["--streams", "10_000", "--channel=c/d", "--verbose"]),
            &["streams", "channel"],
            &["verbose"],
        )
        .unwrap();
        assert_eq!(a.num::<usize>("streams", 0).unwrap(), 10_000);
        assert_eq!(a.get("channel"), Some("c/d"));
        assert!(a.flag("verbose"));
        assert_eq!(a.num::<u32>("procs", 3).unwrap(), 3);
    }

    #[test]
    fn rejects_unknown_and_missing() {
        assert!(Args::parse(&v(&["--nope"]), &[], &[]).is_err());
        assert!(Args::parse(&v(&["--streams"]), &["streams"], &[]).is_err());
        assert!(Args::parse(&v(&["stray"]), &[], &[]).is_err());
        let a = Args::parse(&v(&["--streams", "x"]), &["streams"], &[]).unwrap();
        assert!(a.num::<usize>("streams", 0).is_err());
    }
}
