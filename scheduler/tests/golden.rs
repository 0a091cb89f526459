//! Data-driven scenarios: each `testdata/*.txt` file is a list of blocks
//!
//! ```text
//! # comment
//! <command>
//! <argument lines>
//! ----
//! <expected output>
//! ```
//!
//! separated by blank lines. Commands: `cluster [strategy]` (lines of `machine ...` and
//! `unit ...`: a full snapshot; output is every unit's placement), `add-machine ...`,
//! `remove-machine ID`, `set-metadata ID k=v ...`, `add-unit ...`, `update-unit ...`,
//! `remove-unit NAME`,
//! `desired NAME STATE`, `preview-remove-machine ID`, `preview-add-unit ...` (output:
//! the changes, then for steps the placements). After every step the incremental result
//! must equal a full `decide` of the same snapshot. `SCHEDULER_REWRITE=1` rewrites the
//! expected outputs (review the diff!).

use std::fmt::Write as _;
use std::path::Path;

use scheduler::{Change, Scheduler, Strategy, decide};

use crate::util::{Model, parse_machine, parse_unit, render};

struct Block {
    comment: Vec<String>,
    command: String,
    args: Vec<String>,
    expected: String,
    line: usize,
}

fn parse_file(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    loop {
        let mut comment = Vec::new();
        while let Some((_, l)) = lines.peek() {
            if l.trim().is_empty() {
                lines.next();
            } else if l.starts_with('#') {
                comment.push(l.to_string());
                lines.next();
            } else {
                break;
            }
        }
        let Some((n, command)) = lines.next() else {
            break;
        };
        let mut args = Vec::new();
        for (_, l) in lines.by_ref() {
            if l == "----" {
                break;
            }
            args.push(l.to_string());
        }
        let mut expected = String::new();
        while let Some((_, l)) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
            lines.next();
        }
        blocks.push(Block {
            comment,
            command: command.to_string(),
            args,
            expected,
            line: n + 1,
        });
    }
    blocks
}

fn render_changes(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        writeln!(out, "change {c}").unwrap_or(());
    }
    out
}

fn run_block(
    b: &Block,
    sched: &mut Option<Scheduler>,
    model: &mut Model,
) -> Result<String, String> {
    let words: Vec<&str> = b.command.split_whitespace().collect();
    let (cmd, rest) = words.split_first().ok_or("empty command")?;
    let s = |sched: &mut Option<Scheduler>| -> Result<(), String> {
        if sched.is_none() {
            return Err("no cluster yet".into());
        }
        Ok(())
    };
    let changes = match *cmd {
        "cluster" => {
            *model = Model::default();
            if let Some(st) = rest.first() {
                model.strategy = st.parse::<Strategy>().map_err(|e| e.to_string())?;
            }
            let mut cluster = scheduler::ClusterState {
                strategy: model.strategy.clone(),
                ..Default::default()
            };
            for a in &b.args {
                let w: Vec<&str> = a.split_whitespace().collect();
                match w.split_first() {
                    Some((&"machine", r)) => {
                        let m = parse_machine(r)?;
                        model.machines.insert(m.id.clone(), m.clone());
                        cluster.machines.push(m);
                    }
                    Some((&"unit", r)) => {
                        let (u, at) = parse_unit(r)?;
                        model.units.insert(u.name.clone(), u.clone());
                        cluster.units.push(scheduler::Unit {
                            spec: u,
                            machine: at,
                        });
                    }
                    _ => return Err(format!("bad cluster line {a:?}")),
                }
            }
            let d = decide(&cluster).map_err(|e| e.to_string())?;
            let out = render(&d);
            let s2 = Scheduler::from_cluster(&cluster).map_err(|e| e.to_string())?;
            // Determinism and stability: deciding again from the result changes nothing.
            let again = decide(&model.snapshot(&s2)).map_err(|e| e.to_string())?;
            if again != d {
                return Err(format!(
                    "not stable: re-deciding the result gives\n{}",
                    render(&again)
                ));
            }
            *sched = Some(s2);
            return Ok(out);
        }
        "add-machine" => {
            s(sched)?;
            let m = parse_machine(rest)?;
            model.machines.insert(m.id.clone(), m.clone());
            sched
                .as_mut()
                .unwrap()
                .add_machine(m)
                .map_err(|e| e.to_string())?
        }
        "remove-machine" => {
            s(sched)?;
            let id = rest.first().ok_or("remove-machine ID")?;
            model.machines.remove(*id);
            sched
                .as_mut()
                .unwrap()
                .remove_machine(id)
                .map_err(|e| e.to_string())?
        }
        "set-metadata" => {
            s(sched)?;
            let m = parse_machine(rest)?;
            model.machines.insert(m.id.clone(), m.clone());
            sched
                .as_mut()
                .unwrap()
                .set_metadata(&m.id, m.metadata)
                .map_err(|e| e.to_string())?
        }
        "add-unit" => {
            s(sched)?;
            let (u, at) = parse_unit(rest)?;
            model.units.insert(u.name.clone(), u.clone());
            sched
                .as_mut()
                .unwrap()
                .add_unit_at(u, at.as_deref())
                .map_err(|e| e.to_string())?
        }
        "update-unit" => {
            s(sched)?;
            let (u, _) = parse_unit(rest)?;
            model.units.insert(u.name.clone(), u.clone());
            sched
                .as_mut()
                .unwrap()
                .update_unit(u)
                .map_err(|e| e.to_string())?
        }
        "remove-unit" => {
            s(sched)?;
            let name = rest.first().ok_or("remove-unit NAME")?;
            model.units.remove(*name);
            sched
                .as_mut()
                .unwrap()
                .remove_unit(name)
                .map_err(|e| e.to_string())?
        }
        "desired" => {
            s(sched)?;
            let (name, state) = match rest {
                [n, st] => (*n, st.parse().map_err(|e: scheduler::Error| e.to_string())?),
                _ => return Err("desired NAME STATE".into()),
            };
            if let Some(u) = model.units.get_mut(name) {
                u.desired = state;
            }
            sched
                .as_mut()
                .unwrap()
                .set_desired(name, state)
                .map_err(|e| e.to_string())?
        }
        "preview-remove-machine" | "preview-add-unit" => {
            s(sched)?;
            let sch = sched.as_mut().unwrap();
            let before = sch.decision();
            // The real step on a copy must report the same changes.
            let mut copy = sch.clone();
            let (c, real) = if *cmd == "preview-remove-machine" {
                let id = rest.first().ok_or("preview-remove-machine ID")?;
                (sch.preview_remove_machine(id), copy.remove_machine(id))
            } else {
                let (u, _) = parse_unit(rest)?;
                (sch.preview_add_unit(u.clone()), copy.add_unit(u))
            };
            let c = c.map_err(|e| e.to_string())?;
            if real.as_ref().ok() != Some(&c) {
                return Err(format!("preview {c:?} differs from the step {real:?}"));
            }
            if sch.decision() != before {
                return Err("the dry run changed the scheduler".into());
            }
            return Ok(render_changes(&c));
        }
        other => return Err(format!("unknown command {other:?}")),
    };
    let s = sched.as_ref().unwrap();
    let inc = s.decision();
    // Incremental == full recomputation of the same snapshot.
    let full = decide(&model.snapshot(s)).map_err(|e| e.to_string())?;
    if full != inc {
        return Err(format!(
            "incremental result differs from a full decide:\nincremental:\n{}full:\n{}",
            render(&inc),
            render(&full)
        ));
    }
    Ok(render_changes(&changes) + &render(&inc))
}

fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let blocks = parse_file(&text);
    let rewrite = std::env::var_os("SCHEDULER_REWRITE").is_some();
    let mut sched = None;
    let mut model = Model::default();
    let mut failures = Vec::new();
    let mut rewritten = String::new();
    for b in &blocks {
        let got = run_block(b, &mut sched, &mut model).unwrap_or_else(|e| format!("error: {e}\n"));
        if got != b.expected {
            failures.push(format!(
                "{}:{}: {}\nwant:\n{}got:\n{}",
                path.display(),
                b.line,
                b.command,
                b.expected,
                got
            ));
        }
        for c in &b.comment {
            rewritten.push_str(c);
            rewritten.push('\n');
        }
        rewritten.push_str(&b.command);
        rewritten.push('\n');
        for a in &b.args {
            rewritten.push_str(a);
            rewritten.push('\n');
        }
        rewritten.push_str("----\n");
        rewritten.push_str(&got);
        rewritten.push('\n');
    }
    if rewrite {
        std::fs::write(path, rewritten.trim_end().to_string() + "\n").map_err(|e| e.to_string())?;
        return Ok(());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no testdata files");
    let errors: Vec<String> = paths.iter().filter_map(|p| run_file(p).err()).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}
