//! docs/configuration.md stays true to the code: its complete example parses
//! with the real parsers, every key a section accepts is in the example (the
//! parsers themselves say which keys they expect), and every key of the example
//! has a row in the reference tables.

const DOC: &str = include_str!("../docs/configuration.md");
const MARKER: &str = "<!-- complete example -->";
const PROBE: &str = "zz_not_a_key";

fn example() -> toml::Table {
    let after = DOC
        .split_once(MARKER)
        .expect("the doc marks its complete example")
        .1;
    let body = after
        .split_once("```toml\n")
        .expect("a toml block after the marker")
        .1
        .split_once("```")
        .expect("the block ends")
        .0;
    toml::from_str(body).expect("the complete example is TOML")
}

/// Parses a whole config the way the gateway does: the config, then its
/// `[archive]` and `[ui]` sections with their own types.
fn parse(config: &toml::Table) -> Result<(), String> {
    // The example's secrets from the environment, as in production (the same
    // value every time, so tests running in parallel agree).
    std::env::set_var("CHAPERONE_UI_SESSION_KEY", "k".repeat(32));
    let text = toml::to_string(config).map_err(|e| e.to_string())?;
    let parsed: chaperone_proxy::Config = toml::from_str(&text).map_err(|e| e.to_string())?;
    if let Some(archive) = &parsed.archive {
        chaperone_recorder::ArchiveConfig::from_toml(archive).map_err(|e| e.to_string())?;
    }
    if let Some(ui) = &parsed.ui {
        chaperone_query_ui::UiConfig::from_toml(ui).map_err(|e| e.to_string())?;
    }
    chaperone_masking::Masking::compile(&{
        let mut m = parsed.masking.clone();
        m.key_env = None;
        m.key = Some("a key for the reference test only".into());
        m
    })
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// The keys a parser named as expected in its "unknown field" message.
fn expected_keys(message: &str) -> Option<Vec<String>> {
    let rest = message
        .split_once(&format!("unknown field `{PROBE}`, expected "))?
        .1;
    let list = rest.split('\n').next().unwrap_or(rest);
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every table of the example by path; an array of tables counts as one table
/// with the keys of all its elements (its path ends in `0`, its first element).
fn tables(prefix: Vec<String>, t: &toml::Table, out: &mut Vec<(Vec<String>, toml::Table)>) {
    out.push((prefix.clone(), t.clone()));
    for (k, v) in t {
        let mut path = prefix.clone();
        path.push(k.clone());
        match v {
            toml::Value::Table(inner) => tables(path, inner, out),
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                let mut merged = toml::Table::new();
                for item in items {
                    for (k, v) in item.as_table().expect("a table") {
                        merged.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                path.push("0".into());
                tables(path, &merged, out);
            }
            _ => {}
        }
    }
}

fn table_at<'a>(root: &'a mut toml::Table, path: &[String]) -> &'a mut toml::Table {
    let mut t = root;
    for p in path {
        t = match p.parse::<usize>() {
            Ok(_) => continue,
            Err(_) => match t.get_mut(p).expect("path exists") {
                toml::Value::Table(inner) => inner,
                toml::Value::Array(items) => match items.first_mut() {
                    Some(toml::Value::Table(first)) => first,
                    _ => panic!("an array of tables"),
                },
                _ => panic!("a table"),
            },
        };
    }
    t
}

/// Keys of which a config sets exactly one (the parsers refuse two): the
/// example sets one, and the others must still have a row in the tables.
const ALTERNATIVES: &[&[&str]] = &[
    &["password_env", "password_file", "password"],
    &["token_env", "token_file", "token"],
    &["signing_key_env", "signing_key_file"],
    &["key_env", "key"],
    &["client_secret_env", "client_secret_file", "client_secret"],
    &["session_key_env", "session_key_file"],
];

fn alternative_present(table: &toml::Table, key: &str) -> bool {
    ALTERNATIVES.iter().any(|group| {
        group.contains(&key)
            && group.iter().any(|k| table.contains_key(*k))
            && DOC.contains(&format!("`{key}`"))
    })
}

#[test]
fn the_complete_example_parses_with_the_real_parsers() {
    parse(&example()).expect("the documented example is a valid config");
}

#[test]
fn every_accepted_key_is_in_the_example() {
    let example = example();
    let mut all = Vec::new();
    tables(Vec::new(), &example, &mut all);
    let mut checked = 0;
    let mut missing = Vec::new();
    let mut unlisted = Vec::new();
    for (path, table) in &all {
        let mut probed = example.clone();
        table_at(&mut probed, path).insert(PROBE.into(), toml::Value::Integer(1));
        match parse(&probed) {
            // A map of names (store options, ...): any key goes.
            Ok(()) => {}
            // A map of names whose values are tables (targets, users, roles, ...):
            // the probe is a name with a value of the wrong type.
            Err(message) if !message.contains(&format!("unknown field `{PROBE}`")) => {
                assert!(
                    message.contains("invalid type")
                        || message.contains("did not match any variant"),
                    "{path:?}: {message}"
                );
            }
            Err(message) => {
                let Some(expected) = expected_keys(&message) else {
                    // serde names no expected keys for structs with a flattened
                    // part (targets and users: the password source).
                    unlisted.push(path.join("."));
                    continue;
                };
                checked += 1;
                for key in expected {
                    if !table.contains_key(&key) && !alternative_present(table, &key) {
                        missing.push(format!("{}.{key}", path.join(".")));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys the parsers accept but docs/configuration.md's example lacks: {missing:?}"
    );
    assert!(checked >= 20, "only {checked} sections checked");
    assert!(
        unlisted
            .iter()
            .all(|p| p.starts_with("targets.") || p.starts_with("users.")),
        "sections whose keys could not be listed: {unlisted:?}"
    );
}

#[test]
fn every_key_of_the_example_has_a_row_in_the_tables() {
    let example = example();
    let mut all = Vec::new();
    tables(Vec::new(), &example, &mut all);
    // Keys under maps of free names are values, not settings.
    let free = [
        "targets",
        "users",
        "issuers",
        "roles",
        "policies",
        "approvers",
        "store_options",
        "policy_file_options",
        "claims",
        "patterns",
        "deny_lists",
    ];
    let mut missing = Vec::new();
    for (path, table) in &all {
        if path.last().is_some_and(|p| free.contains(&p.as_str())) {
            continue;
        }
        for (key, value) in table.iter() {
            if value.is_table() && path.last().is_some_and(|p| p == "roles") {
                continue;
            }
            let documented = DOC.contains(&format!("| `{key}`"))
                || DOC.contains(&format!(".{key}`"))
                || DOC.contains(&format!(": `{key}`"))
                || DOC.contains(&format!("/ `{key}`"))
                || DOC.contains(&format!("`{key}."))
                || DOC.contains(&format!("`[{key}"))
                || DOC.contains(&format!("{key}: `"));
            if !documented {
                missing.push(format!("{}.{key}", path.join(".")));
            }
        }
    }
    assert!(missing.is_empty(), "keys without a row: {missing:?}");
}
