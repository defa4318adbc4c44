//! Per-key overrides: `--set section.key=value` and `OBSERVER__SECTION__KEY=value`
//! environment variables, applied to the parsed TOML before it is typed.

use super::ConfigError;

/// Environment prefix of per-key overrides (`OBSERVER__HTTP__LISTEN=0.0.0.0:9464`).
pub const ENV_PREFIX: &str = "OBSERVER__";

/// `(section.key, value)` for every `OBSERVER__SECTION__KEY` variable, sorted by name.
pub fn overrides_from_env() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(ENV_PREFIX)?;
            Some((rest.to_ascii_lowercase().replace("__", "."), v))
        })
        .collect();
    v.sort();
    v
}

/// Sets `key` (`section.key`) in `table` to `value`, read as a TOML value when it is one
/// (`42`, `true`, `["a", "b"]`, `"quoted"`) and as a string otherwise.
pub fn apply(table: &mut toml::Table, key: &str, value: &str) -> Result<(), ConfigError> {
    let Some((section, name)) = key.split_once('.') else {
        return Err(ConfigError::Invalid(format!(
            "override {key:?}: expected section.key=value"
        )));
    };
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let sec = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(sec) = sec.as_table_mut() else {
        return Err(ConfigError::Invalid(format!(
            "override {key:?}: {section} is not a section"
        )));
    };
    sec.insert(name.to_string(), parsed);
    Ok(())
}

/// Splits `section.key=value`.
pub fn split(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("{arg:?}: expected section.key=value"))
}

#[cfg(test)]
mod tests {
    use super::super::FileConfig;

    #[test]
    fn overrides_type_values_and_reject_unknown_keys() {
        let o = vec![
            ("http.listen".to_string(), "0.0.0.0:1".to_string()),
            ("aggregate.top_k".to_string(), "7".to_string()),
            ("probes.errnos".to_string(), "[\"EIO\"]".to_string()),
        ];
        let c = FileConfig::parse_with("", "t", &o).unwrap();
        assert_eq!(c.http.listen, "0.0.0.0:1");
        assert_eq!(c.aggregate.top_k, 7);
        assert_eq!(c.probes.errnos, vec!["EIO"]);
        let e = FileConfig::parse_with("", "t", &[("http.nope".into(), "1".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("http.nope"), "{e}");
        let e = FileConfig::parse_with("", "t", &[("aggregate.top_k".into(), "many".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("top_k"), "{e}");
    }

    #[test]
    fn file_errors_name_the_line() {
        let e = FileConfig::parse("[http]\n\nlisten = 5\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
    }
}
