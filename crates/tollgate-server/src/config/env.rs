//! The `TOLLGATE_*` environment overlay on the file's TOML table.

use super::{ConfigErrors, RawConfig};

const ENV_PREFIX: &str = "TOLLGATE_";
/// Variables with the prefix that are not config fields.
const NON_FIELD_VARS: &[&str] = &["TOLLGATE_CONFIG", "TOLLGATE_LOG"];

/// Overlays `TOLLGATE_*` variables on the file's table, typed by the field's default.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigErrors> {
    let defaults = serde_json::to_value(RawConfig::default()).unwrap_or_default();
    let mut errors = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NON_FIELD_VARS.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let Some(default) = path.iter().try_fold(&defaults, |v, k| v.get(k)) else {
            tracing::warn!(variable = %name, "ignoring environment variable: no such config field");
            continue;
        };
        let typed = match default {
            serde_json::Value::Bool(_) | serde_json::Value::Null if matches!(value.as_str(), "true" | "false") => {
                toml::Value::Boolean(value == "true")
            }
            serde_json::Value::Number(_) => match value.trim().parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => {
                    errors.push(format!("{name}: must be an integer, got {value:?}"));
                    continue;
                }
            },
            serde_json::Value::Bool(_) => {
                errors.push(format!("{name}: must be true or false, got {value:?}"));
                continue;
            }
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                errors.push(format!("{name}: this section is set in the config file, not the environment"));
                continue;
            }
            serde_json::Value::String(_) | serde_json::Value::Null => toml::Value::String(value),
        };
        if let Err(section) = insert_path(table, &path, typed) {
            errors.push(format!("{name}: `{section}` is not a section in the config file"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
}

/// Sets `path` in `table`, creating sections; fails with the name of a path element that
/// exists but is not a section.
fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            match table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
                toml::Value::Table(t) => insert_path(t, rest, value),
                _ => Err(first.clone()),
            }
        }
    }
}
