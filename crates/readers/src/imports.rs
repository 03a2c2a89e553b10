//! Import statements of Python, Rust and TypeScript/JavaScript files, as
//! the files they may refer to.
//!
//! This is a reader of import lines, not a compiler: it finds `import` /
//! `from ... import`, `mod x;` / `use crate::...`, and `import ... from
//! './x'` / `require('./x')`, and lists the files each could name, relative
//! to the plan's directory. Packages from outside the project (anything not
//! found by a relative or project-rooted path) are not files of the plan and
//! are left out.

/// The languages read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `.py`
    Python,
    /// `.rs`
    Rust,
    /// `.ts`, `.tsx`, `.mts`, `.cts`, `.js`, `.jsx`, `.mjs`, `.cjs`
    Script,
}

const SCRIPT_EXTS: &[&str] = &["ts", "tsx", "mts", "cts", "js", "jsx", "mjs", "cjs"];

/// The language of a file, by its extension.
pub fn lang_of(path: &str) -> Option<Lang> {
    let ext = path.rsplit_once('.').map(|(_, e)| e)?;
    match ext {
        "py" => Some(Lang::Python),
        "rs" => Some(Lang::Rust),
        e if SCRIPT_EXTS.contains(&e) => Some(Lang::Script),
        _ => None,
    }
}

/// The files `text` (the content of `path`, relative to the plan's
/// directory, `/`-separated) may import, relative to the same directory.
pub fn imported_files(path: &str, text: &str) -> Vec<String> {
    let mut out = match lang_of(path) {
        Some(Lang::Python) => python(path, text),
        Some(Lang::Rust) => rust(path, text),
        Some(Lang::Script) => script(path, text),
        None => Vec::new(),
    };
    out.retain(|p| p != path && !p.starts_with("../") && p != "..");
    out.sort();
    out.dedup();
    out
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// `a.b.c` under `root`: `a/b/c.py` and `a/b/c/__init__.py`.
fn python_module(root: &str, dotted: &str, out: &mut Vec<String>) {
    if dotted.is_empty() {
        out.push(join(root, "__init__.py"));
        return;
    }
    if !dotted.split('.').all(is_ident) {
        return;
    }
    let rel = dotted.replace('.', "/");
    out.push(join(root, &format!("{rel}.py")));
    out.push(join(root, &format!("{rel}/__init__.py")));
}

fn python(path: &str, text: &str) -> Vec<String> {
    let dir = dir_of(path);
    // Absolute imports may be rooted at the project, at `src/`, or (for
    // scripts) next to the importing file.
    let mut roots = vec!["", "src"];
    if !dir.is_empty() && dir != "src" {
        roots.push(dir);
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix("import ") {
            for item in rest.split(',') {
                let module = item.split_whitespace().next().unwrap_or("");
                for r in &roots {
                    python_module(r, module, &mut out);
                }
            }
        } else if let Some(rest) = line.strip_prefix("from ") {
            let mut words = rest.split_whitespace();
            let module = words.next().unwrap_or("");
            if words.next() != Some("import") {
                continue;
            }
            let rest = words.collect::<Vec<_>>().join(" ");
            let names: Vec<&str> = rest
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .filter_map(|n| n.split_whitespace().next())
                .filter(|n| is_ident(n))
                .collect();
            let dots = module.chars().take_while(|&c| c == '.').count();
            let name = &module[dots..];
            let bases: Vec<String> = if dots > 0 {
                let mut base = dir.to_owned();
                for _ in 1..dots {
                    base = join(&base, "..");
                }
                vec![base]
            } else {
                roots.iter().map(|r| (*r).to_owned()).collect()
            };
            for base in &bases {
                python_module(base, name, &mut out);
                // `from pkg import mod` may name a submodule.
                for n in &names {
                    let sub = if name.is_empty() {
                        (*n).to_owned()
                    } else {
                        format!("{name}.{n}")
                    };
                    python_module(base, &sub, &mut out);
                }
            }
        }
    }
    out
}

/// The directory holding a Rust file's child modules: `dir` for `lib.rs`,
/// `main.rs` and `mod.rs`, `dir/stem` for others.
fn rust_child_dir(path: &str) -> String {
    let dir = dir_of(path);
    let file = path.rsplit('/').next().unwrap_or(path);
    match file {
        "lib.rs" | "main.rs" | "mod.rs" => dir.to_owned(),
        other => join(dir, other.trim_end_matches(".rs")),
    }
}

/// `a::b::c` under `root`: every prefix as `x.rs` or `x/mod.rs` (a path may
/// end in an item, not a module).
fn rust_path(root: &str, segs: &[&str], out: &mut Vec<String>) {
    let mut acc = root.to_owned();
    for s in segs {
        if !is_ident(s) {
            return;
        }
        acc = join(&acc, s);
        out.push(format!("{acc}.rs"));
        out.push(format!("{acc}/mod.rs"));
    }
}

fn rust(path: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let child_dir = rust_child_dir(path);
    // The crate root: the nearest `src` directory above the file.
    let crate_root = {
        let mut d = dir_of(path);
        loop {
            if d == "src" || d.ends_with("/src") || d.is_empty() {
                break d.to_owned();
            }
            d = dir_of(d);
        }
    };
    for line in text.lines() {
        let mut l = line.trim();
        if l.starts_with("//") {
            continue;
        }
        for vis in ["pub(crate) ", "pub(super) ", "pub "] {
            if let Some(rest) = l.strip_prefix(vis) {
                l = rest;
            }
        }
        if let Some(rest) = l.strip_prefix("mod ") {
            let name = rest.trim_end_matches(';').trim();
            if rest.trim_end().ends_with(';') && is_ident(name) {
                out.push(join(&child_dir, &format!("{name}.rs")));
                out.push(join(&child_dir, &format!("{name}/mod.rs")));
            }
        } else if let Some(rest) = l.strip_prefix("use ") {
            let body: String = rest
                .chars()
                .take_while(|&c| c != ';' && c != '{')
                .filter(|c| !c.is_whitespace())
                .collect();
            let segs: Vec<&str> = body.split("::").filter(|s| !s.is_empty()).collect();
            match segs.first() {
                Some(&"crate") => rust_path(&crate_root, &segs[1..], &mut out),
                Some(&"self") => rust_path(&child_dir, &segs[1..], &mut out),
                Some(&"super") => {
                    let up = segs.iter().take_while(|s| **s == "super").count();
                    let mut base = child_dir.clone();
                    for _ in 0..up {
                        base = dir_of(&base).to_owned();
                    }
                    // The parent module itself, then the path below it.
                    if let Some(parent) = Some(base.clone()).filter(|b| !b.is_empty()) {
                        out.push(format!("{parent}.rs"));
                        out.push(format!("{parent}/mod.rs"));
                    }
                    rust_path(&base, &segs[up..], &mut out);
                }
                _ => {}
            }
        }
    }
    out
}

fn script(path: &str, text: &str) -> Vec<String> {
    let dir = dir_of(path);
    let mut out = Vec::new();
    for spec in script_specifiers(text) {
        if !(spec.starts_with("./") || spec.starts_with("../")) {
            continue;
        }
        let base = join(dir, &spec);
        let has_ext = lang_of(&base).is_some() || base.ends_with(".json");
        if has_ext {
            out.push(base.clone());
            // TypeScript imports `./x.js` for `./x.ts`.
            if let Some(stem) = base.strip_suffix(".js") {
                for e in ["ts", "tsx"] {
                    out.push(format!("{stem}.{e}"));
                }
            }
        } else {
            for e in SCRIPT_EXTS {
                out.push(format!("{base}.{e}"));
                out.push(format!("{base}/index.{e}"));
            }
        }
    }
    out
}

/// The module specifiers of `import ... from 'x'`, `import 'x'`,
/// `export ... from 'x'`, `require('x')` and `import('x')`.
fn script_specifiers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["from", "import", "require("] {
        let mut rest = text;
        while let Some(at) = rest.find(key) {
            let before_ok = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '$'));
            let mut tail = rest[at + key.len()..].trim_start();
            rest = &rest[at + key.len()..];
            if !before_ok {
                continue;
            }
            if key == "import" {
                tail = tail.strip_prefix('(').unwrap_or(tail).trim_start();
            }
            let Some(q) = tail
                .chars()
                .next()
                .filter(|c| matches!(c, '\'' | '"' | '`'))
            else {
                continue;
            };
            if let Some(end) = tail[1..].find(q) {
                let spec = &tail[1..1 + end];
                if !spec.contains('\n') {
                    out.push(spec.to_owned());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(list: &[String], want: &str) -> bool {
        list.iter().any(|p| p == want)
    }

    #[test]
    fn python_imports() {
        let text = "import os\nimport app.models as m, util\nfrom app import views\nfrom .helpers import fmt\nfrom ..core import base  # parent\n";
        let got = imported_files("app/api/handlers.py", text);
        assert!(has(&got, "app/models.py"), "{got:?}");
        assert!(has(&got, "app/models/__init__.py"), "{got:?}");
        assert!(has(&got, "util.py"), "{got:?}");
        assert!(has(&got, "app/views.py"), "{got:?}");
        assert!(has(&got, "app/api/helpers.py"), "{got:?}");
        assert!(has(&got, "app/core.py"), "{got:?}");
        assert!(!has(&got, "app/api/handlers.py"));
    }

    #[test]
    fn rust_imports() {
        let text = "mod parse;\npub mod analysis;\nmod inline { }\nuse crate::layout::SessionDir;\nuse super::Task;\n";
        let got = imported_files("crates/session/src/plan.rs", text);
        assert!(has(&got, "crates/session/src/plan/parse.rs"), "{got:?}");
        assert!(
            has(&got, "crates/session/src/plan/analysis/mod.rs"),
            "{got:?}"
        );
        assert!(!got.iter().any(|p| p.contains("inline")), "{got:?}");
        assert!(has(&got, "crates/session/src/layout.rs"), "{got:?}");
        let got = imported_files("src/lib.rs", "mod a;\n");
        assert!(has(&got, "src/a.rs"), "{got:?}");
        let got = imported_files("src/plan/parse.rs", "use super::analysis;\n");
        assert!(has(&got, "src/plan.rs"), "{got:?}");
        assert!(has(&got, "src/plan/analysis.rs"), "{got:?}");
    }

    #[test]
    fn script_imports() {
        let text = "import { a } from './a';\nimport b from \"../lib/b.js\";\nimport 'react';\nconst c = require('./c.json');\nexport * from './d/index';\nconst e = await import('./e');\nconst notme = myimport('./x');\n";
        let got = imported_files("web/src/app.ts", text);
        assert!(has(&got, "web/src/a.ts"), "{got:?}");
        assert!(has(&got, "web/src/a/index.js"), "{got:?}");
        assert!(
            has(&got, "web/lib/b.js") && has(&got, "web/lib/b.ts"),
            "{got:?}"
        );
        assert!(has(&got, "web/src/c.json"), "{got:?}");
        assert!(has(&got, "web/src/d/index.ts"), "{got:?}");
        assert!(has(&got, "web/src/e.tsx"), "{got:?}");
        assert!(
            !got.iter().any(|p| p.contains("react") || p.contains("/x")),
            "{got:?}"
        );
    }
}
