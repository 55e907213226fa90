//! The deployment files against the binaries. `compose.yml` and `.env.example` are
//! where operators learn which variables exist, and nothing checks them at run time: a
//! misspelt or renamed variable is silently ignored, and a new flag nobody documented
//! stays unknown. So the variables the binaries read are taken from their clap
//! definitions (every `env = "…"`, through every subcommand), and both files are held
//! to them.
//!
//! The rules:
//! - every variable compose sets in a service's `environment:` or interpolates as
//!   `${VAR}`, and every `NAME=` line of `.env.example` (commented out or not), is one
//!   a binary reads, or one of [`COMPOSE_ONLY`], which configure the containers;
//! - the `environment:` of a service built from our image names only variables a
//!   binary reads;
//! - `.env.example` has a line for every variable a binary reads and every variable
//!   compose interpolates.
//!
//! Variables of features not built yet (Telegram's) stay out of both files until a
//! binary reads them; from then on this test asks for them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::{Arg, Args, Command, CommandFactory};
use hoox_common::config::ServiceArgs;
use hoox_consumer::config::ConsumerArgs;
use hoox_ingest::config::IngestArgs;
use serde_norway::Value;

/// Variables that configure the containers or compose itself, never read by hoox.
const COMPOSE_ONLY: &[&str] = &[
    // The postgres image: the role, its password and the database it creates. compose
    // also builds DATABASE_URL from the password.
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    // The rabbitmq image: the user it creates and that user's password.
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
    // compose: the broker password it passes to RABBITMQ_DEFAULT_PASS and AMQP_URL.
    "RABBITMQ_PASSWORD",
];

/// Variables the binaries read without clap: `RUST_LOG` is read by tracing's
/// `EnvFilter::try_from_default_env` (common/src/telemetry.rs).
const READ_OUTSIDE_CLAP: &[&str] = &["RUST_LOG"];

/// Every variable some binary reads.
fn read_by_binaries() -> BTreeSet<String> {
    // `hoox-ingest` and `hoox-consumer` keep their `Cli` in `main.rs`; it is exactly
    // the shared settings plus the service's own, which is rebuilt here. (`hoox run`
    // flattens all of them too.)
    let binaries = [
        hoox::Cli::command(),
        IngestArgs::augment_args(ServiceArgs::augment_args(Command::new("hoox-ingest"))),
        ConsumerArgs::augment_args(ServiceArgs::augment_args(Command::new("hoox-consumer"))),
    ];
    let mut names: BTreeSet<String> = READ_OUTSIDE_CLAP.iter().map(|&n| n.to_owned()).collect();
    for binary in &binaries {
        collect_env(binary, &mut names);
    }
    names
}

/// The `env` of every argument of `command` and of its subcommands, at any depth.
fn collect_env(command: &Command, names: &mut BTreeSet<String>) {
    names.extend(
        command
            .get_arguments()
            .filter_map(Arg::get_env)
            .map(|env| env.to_string_lossy().into_owned()),
    );
    for subcommand in command.get_subcommands() {
        collect_env(subcommand, names);
    }
}

fn read_repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {name}: {err}"))
}

/// What `compose.yml` names: each variable with the places it appears.
#[derive(Debug, Default)]
struct ComposeVariables {
    /// Set in a service's `environment:`, by service.
    environment: BTreeMap<String, BTreeSet<String>>,
    /// The services built from our image.
    hoox_services: BTreeSet<String>,
    /// Interpolated as `${VAR}` or `$VAR` anywhere.
    interpolated: BTreeSet<String>,
}

fn compose_variables(text: &str) -> ComposeVariables {
    let mut compose: Value = serde_norway::from_str(text).expect("compose.yml is YAML");
    // Resolve `<<: *anchor`, as compose does, so each service shows all it inherits.
    compose
        .apply_merge()
        .expect("compose.yml's merge keys resolve");
    let mut found = ComposeVariables::default();
    let mut strings = Vec::new();
    collect_strings(&compose, &mut strings);
    for text in strings {
        interpolations(text, &mut found.interpolated);
    }
    let services = compose
        .get("services")
        .and_then(Value::as_mapping)
        .expect("compose.yml has services");
    for (name, service) in services {
        let name = name.as_str().expect("service names are strings").to_owned();
        if service.get("build").is_some() {
            found.hoox_services.insert(name.clone());
        }
        let names: Vec<String> = match service.get("environment") {
            None => Vec::new(),
            Some(Value::Mapping(variables)) => variables
                .keys()
                .map(|key| key.as_str().expect("variable names are strings").to_owned())
                .collect(),
            // The list form: `- NAME=value` or `- NAME`.
            Some(Value::Sequence(entries)) => entries
                .iter()
                .map(|entry| {
                    let entry = entry.as_str().expect("environment entries are strings");
                    entry.split_once('=').map_or(entry, |(n, _)| n).to_owned()
                })
                .collect(),
            Some(other) => panic!("service {name}: unexpected environment {other:?}"),
        };
        for variable in names {
            found
                .environment
                .entry(variable)
                .or_default()
                .insert(name.clone());
        }
    }
    found
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Sequence(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Mapping(map) => map.values().for_each(|item| collect_strings(item, out)),
        Value::Tagged(tagged) => collect_strings(&tagged.value, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The variables compose substitutes in `text`: `${NAME…}` and `$NAME`, but not `$$`,
/// which is a literal `$` for the container (the health checks' shell variables).
fn interpolations(text: &str, names: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        }
        let body = rest.strip_prefix('{').unwrap_or(rest);
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if end > 0 {
            names.insert(body[..end].to_owned());
        }
        rest = &body[end..];
    }
}

/// The variables `.env.example` documents: every `NAME=…` line, commented out (the
/// default applies) or not.
fn env_example_entries(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.strip_prefix('#').unwrap_or(line).trim_start();
            let (name, _) = line.split_once('=')?;
            let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn compose_and_env_example_name_only_variables_the_binaries_read() {
    let read = read_by_binaries();
    let compose = compose_variables(&read_repo_file("compose.yml"));
    let example = env_example_entries(&read_repo_file(".env.example"));
    let known = |name: &str| read.contains(name) || COMPOSE_ONLY.contains(&name);

    let mut unknown = Vec::new();
    for (name, services) in &compose.environment {
        for service in services {
            let hoox = compose.hoox_services.contains(service);
            if !read.contains(name) && (hoox || !known(name)) {
                unknown.push(format!("{name} (compose.yml, environment of {service})"));
            }
        }
    }
    for name in compose.interpolated.iter().filter(|name| !known(name)) {
        unknown.push(format!("{name} (compose.yml, interpolated)"));
    }
    for name in example.iter().filter(|name| !known(name)) {
        unknown.push(format!("{name} (.env.example)"));
    }
    assert!(
        unknown.is_empty(),
        "variables no hoox binary reads (a typo, a renamed flag, or one for COMPOSE_ONLY): {unknown:#?}"
    );
}

#[test]
fn env_example_documents_every_variable_the_binaries_read_and_compose_needs() {
    let example = env_example_entries(&read_repo_file(".env.example"));
    let compose = compose_variables(&read_repo_file("compose.yml"));
    let read = read_by_binaries();
    for expected in ["DATABASE_URL", "HOOX_WEBHOOK_API_KEY", "BYBIT_API_KEY"] {
        assert!(
            read.contains(expected),
            "{expected} not found in the clap definitions"
        );
    }

    let missing: BTreeSet<&String> = read
        .iter()
        .chain(&compose.interpolated)
        .filter(|name| !example.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "variables missing from .env.example: {missing:#?}"
    );
}
