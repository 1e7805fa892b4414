//! The agent's settings from three places: flags win, then `OBSERVER_*` environment
//! variables (clap's `env`), then the config file (`/etc/observer/config.toml`, `--config`
//! to choose), then the defaults. The file's keys are the flags' names with `_`
//! (`ringbuf_size = "8M"`, `containerd_state = ["/run/containerd"]`); each value goes
//! through the flag's own parser, so the file accepts exactly what the flag does. A parse
//! error, an unknown key or a bad value names the file, the line and the key.
//!
//! File settings reach clap as extra `--flag=value` arguments, added only for settings that
//! neither the command line nor the environment set — one parser, one set of checks.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail};
use clap::{parser::ValueSource, Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

pub(crate) const DEFAULT_CONFIG: &str = "/etc/observer/config.toml";

/// Arguments of `observer agent` that are not settings (never in the file nor printed);
/// `calibrate` is the benchmark's hidden flag, not something to deploy.
const NOT_SETTINGS: &[&str] = &["config", "print_config", "help", "verbose", "calibrate"];

/// What the config file contributed.
#[derive(Default)]
pub(crate) struct FromFile {
    pub(crate) path: Option<PathBuf>,
    /// Keys the file set that flags and the environment did not.
    pub(crate) keys: Vec<String>,
    /// Those settings as flags to add to the command line.
    pub(crate) flags: Vec<OsString>,
}

/// The agent's settings (every argument that is one).
fn settings(agent: &Command) -> impl Iterator<Item = &Arg> {
    agent
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_SETTINGS.contains(&a.get_id().as_str()))
}

/// Reads the config file `m` names (the default one only if it exists).
pub(crate) fn read(agent: &Command, m: &ArgMatches) -> anyhow::Result<FromFile> {
    let path = m
        .get_one::<PathBuf>("config")
        .cloned()
        .unwrap_or_else(|| DEFAULT_CONFIG.into());
    let explicit = m.value_source("config") != Some(ValueSource::DefaultValue);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FromFile::default())
        }
        Err(e) => bail!("config {}: {e}", path.display()),
    };
    let text = String::from_utf8(text)
        .map_err(|e| anyhow!("config {}: not UTF-8 text ({e})", path.display()))?;
    parse(agent, m, &path, &text)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

pub(crate) fn parse(
    agent: &Command,
    m: &ArgMatches,
    path: &Path,
    text: &str,
) -> anyhow::Result<FromFile> {
    let at = |offset: usize| format!("config {}:{}", path.display(), line_of(text, offset));
    let doc = DeTable::parse(text).map_err(|e| {
        anyhow!(
            "{}: {}",
            at(e.span().map_or(0, |s| s.start)),
            e.message().trim()
        )
    })?;
    let mut out = FromFile {
        path: Some(path.to_path_buf()),
        ..FromFile::default()
    };
    for (key, value) in doc.get_ref() {
        let name: &str = key.get_ref();
        let here = at(key.span().start);
        let arg = settings(agent)
            .find(|a| a.get_id() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = settings(agent).map(|a| a.get_id().as_str()).collect();
                anyhow!("{here}: unknown key `{name}` (known: {})", known.join(", "))
            })?;
        let bad = |why: &dyn std::fmt::Display| anyhow!("{here}: key `{name}`: {why}");
        let values = scalars(value.get_ref()).map_err(|e| bad(&e))?;
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let many = matches!(arg.get_action(), ArgAction::Append);
        if values.len() != 1 && !many {
            return Err(bad(&format_args!(
                "expects one value, not {}",
                values.len()
            )));
        }
        if flag && !matches!(value.get_ref(), DeValue::Boolean(_)) {
            return Err(bad(&"expects true or false"));
        }
        let long = arg.get_long().expect("settings have a long flag");
        if !flag {
            // Each value through the flag's own parser (clap keeps it private: a one-flag
            // command line it is).
            for v in &values {
                agent
                    .clone()
                    .try_get_matches_from([
                        OsStr::new("agent"),
                        OsStr::new(&format!("--{long}={v}")),
                    ])
                    .map_err(|e| bad(&clap_message(&e)))?;
            }
        }
        if matches!(
            m.value_source(name),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        out.keys.push(name.to_string());
        if flag {
            if values[0] == "true" {
                out.flags.push(format!("--{long}").into());
            }
        } else {
            out.flags.extend(
                values
                    .iter()
                    .map(|v| OsString::from(format!("--{long}={v}"))),
            );
        }
    }
    Ok(out)
}

/// A TOML value as the strings a flag would get.
fn scalars(v: &DeValue) -> anyhow::Result<Vec<String>> {
    Ok(match v {
        DeValue::String(s) => vec![s.to_string()],
        DeValue::Integer(i) if i.radix() == 10 => vec![i.as_str().replace('_', "")],
        DeValue::Integer(i) => {
            vec![i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())?.to_string()]
        }
        DeValue::Float(f) => vec![f.as_str().to_string()],
        DeValue::Boolean(b) => vec![b.to_string()],
        DeValue::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                match x.get_ref() {
                    DeValue::Array(_) | DeValue::Table(_) => {
                        bail!("expects a list of strings or numbers")
                    }
                    x => out.extend(scalars(x)?),
                }
            }
            out
        }
        DeValue::Datetime(_) => bail!("a date is not a valid value here"),
        DeValue::Table(_) => bail!("expects a value, not a table (settings are top-level keys)"),
    })
}

/// clap's message without its `error: ` prefix and usage hint.
fn clap_message(e: &clap::Error) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The effective settings as a config file, each with where it came from.
pub(crate) fn render(agent: &Command, m: &ArgMatches, file: &FromFile) -> String {
    let mut out = format!(
        "# observer agent: effective settings (flags win, then OBSERVER_* variables, then {}, \
         then defaults)\n",
        file.path.as_deref().map_or_else(
            || format!("{DEFAULT_CONFIG} (absent)"),
            |p| p.display().to_string()
        )
    );
    for arg in settings(agent) {
        let id = arg.get_id().as_str();
        let origin = if file.keys.iter().any(|k| k == id) {
            "config file".to_string()
        } else {
            match m.value_source(id) {
                Some(ValueSource::CommandLine) => {
                    format!("flag --{}", arg.get_long().unwrap_or(id))
                }
                Some(ValueSource::EnvVariable) => format!(
                    "environment {}",
                    arg.get_env()
                        .map_or_else(String::new, |e| e.to_string_lossy().into_owned())
                ),
                Some(ValueSource::DefaultValue) => "default".into(),
                _ => "unset".into(),
            }
        };
        let values: Vec<String> = m
            .get_raw(id)
            .map(|r| r.map(|v| quote(&shown(id, &v.to_string_lossy()))).collect())
            .unwrap_or_default();
        let line = match (values.len(), arg.get_action()) {
            (0, ArgAction::SetTrue) => format!("{id} = false"),
            (0, _) => format!("# {id} ="),
            (_, ArgAction::Append) => format!("{id} = [{}]", values.join(", ")),
            (_, ArgAction::SetTrue) => format!("{id} = {}", m.get_flag(id)),
            _ => format!("{id} = {}", values[0]),
        };
        out.push_str(&format!("{line:<60} # {origin}\n"));
    }
    out
}

/// A setting's value as printed: an OTLP header's value is a credential (`Authorization=…`),
/// so only its name is shown.
fn shown(id: &str, v: &str) -> String {
    if id != "otlp_header" {
        return v.to_string();
    }
    // Split as the sink parses it (`name=value`, else `name: value`); nothing else shown.
    match v.find(['=', ':']).map(|i| v.split_at(i)) {
        Some((name, _)) => format!("{}=***", name.trim()),
        None => "***".into(),
    }
}

/// A TOML basic string (JSON's string escapes are TOML's).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn print_config_shows_no_otlp_header_value_in_either_form() {
        for (given, printed) in [
            ("Authorization=Bearer s3cr3t", "Authorization=***"),
            ("Authorization: Basic dXNlcjpwYXNz==", "Authorization=***"),
            ("Bearer-without-name", "***"),
        ] {
            assert_eq!(super::shown("otlp_header", given), printed);
        }
        assert_eq!(super::shown("listen", "127.0.0.1:1"), "127.0.0.1:1");
    }
}
