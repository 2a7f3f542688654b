//! README.md and docs/ stay true: every link resolves inside the repository (to a file, and to a
//! heading of it for an anchor), and every shell command is one this test runs or checks.
//!
//! - The Quick start's `curl` block runs for real against the sidecar binary on the embedded
//!   store (on free ports instead of 9991 and 9990), whose log must speak of that store.
//! - Every `zenko-memcached-sidecar` and `zenko-memcached-operator` command line (as is, through
//!   `cargo run`, or as arguments of the project's images under `docker run`) is parsed by the
//!   binaries' own parsers; the operator's `stack` and `manifests` commands run on the
//!   repository's files they name.
//! - `cargo test` and `cargo bench` name packages, tests and benches that exist; `docker build`
//!   targets of the Dockerfile; `kubectl apply -f`, `docker stack deploy -c` and scripts name
//!   files of the repository or written by an earlier command of the same document.
//! - Commands that need a cluster or a swarm (`kubectl`, `helm`, `docker node`, ...) cannot run
//!   here: their files are checked, and `charts/tests/check_chart.py` renders the chart with the
//!   `--set` values of every `helm install` and `helm upgrade`.
//!
//! JSON and YAML blocks must parse.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use zenko_memcached_operator::cli::{Cli as OperatorCli, Command as OperatorCommand};
use zenko_memcached_operator::manifests::{manifests_yaml, stack_files_yaml};
use zenko_memcached_sidecar::config::Config as SidecarConfig;
use zenko_memcached_testkit::{free_port, wait_for_listener};

const SIDECAR: &str = env!("CARGO_BIN_EXE_zenko-memcached-sidecar");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the sidecar crate is in the repository")
        .to_path_buf()
}

/// README.md and every Markdown file under docs/, relative to the repository's top.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut docs = vec![root().join("README.md")];
    walk(&root().join("docs"), &mut docs);
    docs
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A fenced block: its language and text, and the line it starts on.
struct Block {
    lang: String,
    text: String,
    line: usize,
}

/// The document's fenced blocks, and its other lines (numbered from 1).
fn split(text: &str) -> (Vec<Block>, Vec<(usize, String)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            Some(block) if fence => blocks.push(block),
            Some(mut block) => {
                block.text.push_str(line);
                block.text.push('\n');
                open = Some(block);
            }
            None if fence => {
                open = Some(Block {
                    lang: line.trim_start().trim_start_matches('`').trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                });
            }
            None => prose.push((i + 1, line.to_owned())),
        }
    }
    assert!(open.is_none(), "a fenced block is never closed");
    (blocks, prose)
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a document's headings (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let (_, prose) = split(text);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        out.insert(if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    out
}

/// A line without its code spans, whose text is not Markdown.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The targets of the inline links `[text](target)` of a line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        out.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    out
}

/// Why a link of `doc` is wrong, or `None`.
fn broken_link(doc: &Path, target: &str) -> Option<String> {
    if target.starts_with("https://") {
        return None;
    }
    if target.contains("://") || target.starts_with("mailto:") || target.starts_with('/') {
        return Some("links only to files of the repository (relative) or https pages".into());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        doc.to_path_buf()
    } else {
        let mut resolved = doc.parent().unwrap_or(Path::new("")).to_path_buf();
        for part in Path::new(path).components() {
            match part {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => resolved.push(name),
                _ => {}
            }
        }
        resolved
    };
    if !file.starts_with(root()) {
        return Some("points outside the repository".into());
    }
    if !file.exists() {
        return Some(format!("{} does not exist", relative(&file)));
    }
    let anchor = anchor?;
    if !anchors(&read(&file)).contains(anchor) {
        return Some(format!("{} has no heading #{anchor}", relative(&file)));
    }
    None
}

#[test]
fn every_link_resolves_inside_the_repository() {
    let mut broken = Vec::new();
    let mut count = 0;
    for doc in documents() {
        let (_, prose) = split(&read(&doc));
        for (line, text) in prose {
            for target in link_targets(&text) {
                count += 1;
                if let Some(why) = broken_link(&doc, &target) {
                    broken.push(format!("{}:{line}: ({target}) {why}", relative(&doc)));
                }
            }
        }
    }
    assert!(count > 50, "only {count} links found: is the parser right?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_catches_what_it_must() {
    let readme = root().join("README.md");
    for bad in [
        "../shared/docs/cloudserver-backend-protocol.md",
        "docs/missing.md",
        "docs/design.md#no-such-heading",
        "#no-such-heading",
        "file:///etc/passwd",
        "/etc/passwd",
        "http://example.com",
    ] {
        assert!(broken_link(&readme, bad).is_some(), "{bad} went through");
    }
    assert!(broken_link(&readme, "docs/design.md#replicas").is_none());
    assert_eq!(
        slug(" Changing the servers or the factor"),
        "changing-the-servers-or-the-factor"
    );
    assert_eq!(slug(" 1. Images"), "1-images");
}

// ---------------------------------------------------------------------------------------------
// Shell commands.

/// Shell words of a line: quotes removed, `$(...)` kept whole, a `#` word starts a comment.
/// Operators (`&&`, `||`, `|`, `;`, `>`) are words of their own.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut started = false;
    let mut chars = line.chars().peekable();
    let flush = |word: &mut String, started: &mut bool, out: &mut Vec<String>| {
        if *started {
            out.push(std::mem::take(word));
            *started = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                started = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                started = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '$' if chars.peek() == Some(&'(') => {
                started = true;
                word.push('$');
                let mut depth = 0;
                for c in chars.by_ref() {
                    word.push(c);
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '#' if !started => break,
            c if c.is_whitespace() => flush(&mut word, &mut started, &mut out),
            '|' | '&' | ';' | '>' => {
                flush(&mut word, &mut started, &mut out);
                let mut op = c.to_string();
                if chars.peek() == Some(&c) {
                    op.push(c);
                    chars.next();
                }
                out.push(op);
            }
            c => {
                started = true;
                word.push(c);
            }
        }
    }
    flush(&mut word, &mut started, &mut out);
    out
}

/// The simple commands of a block, each with the file its output is redirected to.
fn commands(block: &str) -> Vec<(Vec<String>, Option<String>)> {
    let joined = block.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut current = Vec::new();
        let mut redirect = None;
        let mut words = words(line).into_iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "&&" | "||" | "|" | ";" | "&" => {
                    out.push((std::mem::take(&mut current), redirect.take()))
                }
                ">" | ">>" => redirect = words.next(),
                _ => current.push(word),
            }
        }
        out.push((current, redirect));
    }
    out.into_iter()
        .map(|(mut words, redirect)| {
            // A loop's head; shell keywords, `sudo` and variable assignments in front of a
            // command.
            if words.first().is_some_and(|w| w == "for") {
                words.clear();
            }
            while let Some(first) = words.first() {
                let keyword = ["for", "do", "done", "sudo", "then", "fi"].contains(&first.as_str());
                let assignment = first.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                if keyword || assignment {
                    words.remove(0);
                } else {
                    break;
                }
            }
            (optional_groups_opened(words), redirect)
        })
        .filter(|(words, _)| !words.is_empty())
        .collect()
}

/// A usage line's optional groups (`[--rate-mib 64]`) as plain arguments, so that they are
/// parsed too.
fn optional_groups_opened(words: Vec<String>) -> Vec<String> {
    let mut in_group = false;
    words
        .into_iter()
        .map(|word| {
            let mut word = word.as_str();
            if word.starts_with("[-") {
                in_group = true;
                word = &word[1..];
            }
            if in_group && let Some(rest) = word.strip_suffix(']') {
                in_group = false;
                word = rest;
            }
            word.to_owned()
        })
        .collect()
}

/// What the commands of one document have written so far (`-o FILE`, `> FILE`).
#[derive(Default)]
struct Written(BTreeSet<String>);

impl Written {
    fn has(&self, file: &str) -> bool {
        self.0.contains(file) || root().join(file).exists()
    }
}

fn option_values<'a>(args: &'a [String], names: &[&str]) -> Vec<&'a str> {
    args.iter()
        .enumerate()
        .filter(|(_, a)| names.contains(&a.as_str()))
        .filter_map(|(i, _)| args.get(i + 1).map(String::as_str))
        .collect()
}

/// A placeholder or variable stands for the user's own value: nothing to check.
fn literal(word: &str) -> bool {
    !word.contains('<') && !word.contains('$')
}

fn check_sidecar(args: &[String]) -> Result<(), String> {
    let argv = std::iter::once("zenko-memcached-sidecar".to_owned()).chain(args.iter().cloned());
    SidecarConfig::try_parse_from(argv)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_operator(args: &[String], written: &mut Written) -> Result<(), String> {
    let argv = std::iter::once("zenko-memcached-operator".to_owned()).chain(args.iter().cloned());
    let cli = OperatorCli::try_parse_from(argv).map_err(|e| e.to_string())?;
    match cli.command {
        OperatorCommand::Stack(stack) => {
            if let Some(out) = &stack.output {
                written.0.insert(out.display().to_string());
            }
            let files: Vec<String> = stack
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            if files.iter().all(|f| literal(f) && root().join(f).exists()) {
                let texts: Vec<String> = files.iter().map(|f| read(&root().join(f))).collect();
                stack_files_yaml(&texts, &stack.namespace, &stack.options())
                    .map_err(|e| format!("the stack command fails: {e}"))?;
            }
        }
        OperatorCommand::Manifests(manifests) => {
            let file = root().join(&manifests.file);
            if file.exists() {
                manifests_yaml(&read(&file), &manifests.namespace)
                    .map_err(|e| format!("the manifests command fails: {e}"))?;
            }
        }
        OperatorCommand::Crd | OperatorCommand::Run(_) => {}
    }
    Ok(())
}

/// `cargo` commands: packages, tests and benches that exist, and the binaries' arguments.
fn check_cargo(args: &[String], written: &mut Written) -> Result<(), String> {
    let packages = BTreeMap::from([
        ("zenko-memcached-sidecar", "sidecar"),
        ("zenko-memcached-operator", "operator"),
        ("zenko-memcached-testkit", "testkit"),
    ]);
    let (own, rest) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (args, &args[args.len()..]),
    };
    let package = option_values(own, &["-p", "--package"]).first().copied();
    let dir = match package {
        Some(name) => *packages
            .get(name)
            .ok_or_else(|| format!("no package {name}"))?,
        None => "",
    };
    for (option, folder) in [("--test", "tests"), ("--bench", "benches")] {
        for target in option_values(own, &[option]) {
            let file = root().join(dir).join(folder).join(format!("{target}.rs"));
            if !file.exists() {
                return Err(format!("{dir} has no {option} {target}"));
            }
        }
    }
    match (own.first().map(String::as_str), package) {
        (Some("run"), Some("zenko-memcached-sidecar")) => check_sidecar(rest),
        (Some("run"), Some("zenko-memcached-operator")) => check_operator(rest, written),
        (Some("run"), _) => Err("cargo run of an unknown package".into()),
        (Some("test" | "bench" | "build" | "fmt" | "clippy"), _) => Ok(()),
        _ => Err("unknown cargo command".into()),
    }
}

fn check_docker(args: &[String], written: &mut Written) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("run") => {
            // Options of `docker run` that take a value.
            let valued = [
                "-v",
                "--volume",
                "--network",
                "--user",
                "-u",
                "-e",
                "--env",
                "--name",
                "-w",
            ];
            let mut rest = args[1..].iter();
            while let Some(arg) = rest.next() {
                if arg.starts_with('-') {
                    if valued.contains(&arg.as_str()) {
                        rest.next();
                    }
                    continue;
                }
                let image_args: Vec<String> = rest.cloned().collect();
                return if arg.starts_with("zenko/zenko-memcached-sidecar:") {
                    check_sidecar(&image_args)
                } else if arg.starts_with("zenko/zenko-memcached-operator:") {
                    check_operator(&image_args, written)
                } else {
                    Ok(())
                };
            }
            Err("docker run without an image".into())
        }
        Some("build") => {
            let dockerfile = read(&root().join("Dockerfile"));
            for target in option_values(args, &["--target"]) {
                if !dockerfile.contains(&format!(" AS {target}\n")) {
                    return Err(format!("the Dockerfile has no target {target}"));
                }
            }
            Ok(())
        }
        Some("stack") => {
            for file in option_values(args, &["-c"]) {
                if literal(file) && !written.has(file) {
                    return Err(format!(
                        "{file} is neither in the repository nor written before"
                    ));
                }
            }
            Ok(())
        }
        Some("node" | "network" | "service" | "secret") => Ok(()),
        _ => Err("unknown docker command".into()),
    }
}

fn check_command(words: &[String], written: &mut Written) -> Result<(), String> {
    let (program, args) = words.split_first().ok_or("empty command")?;
    match program.as_str() {
        "cargo" => check_cargo(args, written),
        "zenko-memcached-sidecar" => check_sidecar(args),
        "zenko-memcached-operator" => check_operator(args, written),
        "docker" => check_docker(args, written),
        "kubectl" => {
            if args.iter().any(|a| a == "apply") {
                for file in option_values(args, &["-f"]) {
                    if literal(file) && !written.has(file) {
                        return Err(format!(
                            "{file} is neither in the repository nor written before"
                        ));
                    }
                }
            }
            Ok(())
        }
        "helm" => {
            // The --set values are rendered by charts/tests/check_chart.py.
            match args.first().map(String::as_str) {
                Some("install" | "upgrade") => {
                    let chart = args.iter().find(|a| a.starts_with("charts/"));
                    match chart {
                        Some(chart) if root().join(chart).join("Chart.yaml").exists() => Ok(()),
                        _ => Err("helm install of no chart of the repository".into()),
                    }
                }
                Some("uninstall" | "get") => Ok(()),
                _ => Err("unknown helm command".into()),
            }
        }
        "python3" => match args.first().map(String::as_str) {
            Some("-m") => Ok(()),
            Some(script) if root().join(script).exists() => Ok(()),
            _ => Err("python3 of no script of the repository".into()),
        },
        script if script.starts_with("scripts/") => {
            if root().join(script).exists() {
                Ok(())
            } else {
                Err(format!("{script} does not exist"))
            }
        }
        // Tools of the host, run by hand on a node, or the Quick start's client (run below).
        "install" | "printf" | "echo" | "jq" | "base64" | "openssl" | "curl" | "memcached"
        | "aws" => Ok(()),
        _ => Err("a command the documentation test does not know: say how to check it".into()),
    }
}

#[test]
fn every_shell_command_is_checked() {
    let mut failures = Vec::new();
    let mut count = 0;
    for doc in documents() {
        let mut written = Written::default();
        let (blocks, _) = split(&read(&doc));
        for block in blocks
            .iter()
            .filter(|b| ["sh", "bash", "shell"].contains(&b.lang.as_str()))
        {
            for (words, redirect) in commands(&block.text) {
                count += 1;
                if let Err(why) = check_command(&words, &mut written) {
                    failures.push(format!(
                        "{}:{}: `{}`: {why}",
                        relative(&doc),
                        block.line,
                        words.join(" ")
                    ));
                }
                if let Some(file) = redirect {
                    written.0.insert(file);
                }
            }
        }
    }
    assert!(
        count > 80,
        "only {count} commands found: is the parser right?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_command_check_catches_what_it_must() {
    let mut written = Written::default();
    for bad in [
        "zenko-memcached-sidecar --memcahced 127.0.0.1:11211",
        "cargo run -p zenko-memcached-operator -- stack -f examples/module.yaml --with-cloudservr",
        "cargo run -p zenko-memcached-operator -- stack -f examples/module.yaml -f examples/module-ha.yaml",
        "cargo test -p zenko-memcached-operator --test no_such_test",
        "kubectl apply -f examples/no-such-module.yaml",
        "docker build --target nothing .",
        "rm -rf /",
        "zenko-memcached-sidecar placement change --memcached a:1 --to a:1,b:1 [--rate-mb 64]",
    ] {
        let (words, _) = &commands(bad)[0];
        assert!(
            check_command(words, &mut written).is_err(),
            "{bad} went through"
        );
    }
    assert_eq!(
        commands("a=1 sudo install -d x   # comment\nS=x\nfoo | bar > out.yml"),
        [
            (
                vec!["install".to_owned(), "-d".to_owned(), "x".to_owned()],
                None
            ),
            (vec!["foo".to_owned()], None),
            (vec!["bar".to_owned()], Some("out.yml".to_owned())),
        ]
    );
}

#[test]
fn json_and_yaml_blocks_parse() {
    let mut failures = Vec::new();
    for doc in documents() {
        let (blocks, _) = split(&read(&doc));
        for block in &blocks {
            let parsed = match block.lang.as_str() {
                "json" => serde_json::from_str::<serde_json::Value>(&block.text)
                    .map_err(|e| e.to_string()),
                "yaml" => serde_saphyr::from_str::<serde_json::Value>(&block.text)
                    .map_err(|e| e.to_string()),
                _ => Ok(serde_json::Value::Null),
            };
            if let Err(e) = parsed {
                failures.push(format!("{}:{}: {e}", relative(&doc), block.line));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The README's Quick start, as a newcomer runs it: the sidecar on its embedded store, then the
/// `curl` block (on the ports the test got instead of 9991 and 9990).
#[test]
fn the_quick_start_works_as_written() {
    let readme = read(&root().join("README.md"));
    let (blocks, _) = split(&readme);
    let start = blocks
        .iter()
        .find(|b| {
            b.text
                .contains("cargo run --release -p zenko-memcached-sidecar ")
        })
        .expect("the Quick start's first command");
    assert!(
        start.text.contains("scripts/test"),
        "the two commands of the Quick start"
    );
    let client = blocks
        .iter()
        .find(|b| b.lang == "sh" && b.text.contains("/DataFile/") && b.text.contains("curl"))
        .expect("the Quick start's curl block");

    let (data, metadata, admin) = (free_port(), free_port(), free_port());
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quick-start-{}.log", std::process::id()));
    let mut sidecar = Command::new(SIDECAR)
        .args(["--data-addr", &format!("127.0.0.1:{data}")])
        .args(["--metadata-addr", &format!("127.0.0.1:{metadata}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the sidecar binary");
    for port in [data, metadata] {
        assert!(
            wait_for_listener(([127, 0, 0, 1], port).into(), Duration::from_secs(30)),
            "the sidecar does not listen on {port}"
        );
    }
    let script = client
        .text
        .replace("127.0.0.1:9991", &format!("127.0.0.1:{data}"))
        .replace("127.0.0.1:9990", &format!("127.0.0.1:{metadata}"));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .expect("bash");
    let _ = sidecar.kill();
    let _ = sidecar.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let key = lines[0].strip_prefix("/DataFile/").unwrap_or_default();
    assert!(
        key.len() == 40
            && key
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "the key in Location: {}",
        lines[0]
    );
    assert_eq!(lines[1..], ["hello, blob", "204", "200"], "{stdout}");

    // On the embedded store, the log speaks of it, not of memcached.
    let log = read(&log);
    assert!(log.contains("the embedded store reachable"), "{log}");
    assert!(log.contains("the embedded store starts empty"), "{log}");
    assert!(
        !log.contains("memcached reachable") && !log.contains("NEW EPOCH"),
        "{log}"
    );
}
