//! How a task's `command` is started: a plain command directly, anything
//! else with `sh -c`.
//!
//! `sh -c 'sleep 1'` costs a shell's start-up (about a millisecond here)
//! before the command itself, on every task and on the critical path of
//! every chain of dependent tasks. make does not pay it: a recipe line
//! with nothing for a shell to interpret is split into words and executed
//! directly. orch does the same, conservatively. A command line is *plain*
//! when it is only words separated by spaces or tabs, none holding a
//! character a shell would interpret (quotes, `\`, `$`, `` ` ``, globs,
//! `~`, `#`, redirections, `;`, `&`, `|`, parentheses, braces, `!`, `^`, a
//! control character), its first word assigns no variable (`=`) and names
//! neither a shell builtin nor a reserved word (so `echo -e`, `cd`, `test`
//! and `exit` keep the shell's meaning).
//!
//! What a plain command sees is what `sh -c` gave it: the same argument
//! vector, the program found in the same `PATH`, and a `PWD` set the way
//! the shell sets it ([`pwd`]). Where the program cannot be started (not
//! found, not executable) the line is run with `sh -c` after all, so the
//! failure reads exactly as before: exit 127 and the shell's `not found`.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Words whose meaning is the shell's: builtins and reserved words of
/// dash and bash (whichever `/bin/sh` is).
const SHELL_WORDS: &[&str] = &[
    ".",
    ":",
    "[",
    "[[",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "chdir",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
];

/// What starts `line`: its words and, for a plain command, the line
/// itself to run with `sh -c` where the first word cannot be started;
/// else `sh -c line` and no fallback.
pub fn argv(line: &str) -> (Vec<String>, Option<String>) {
    match words(line) {
        Some(w) => (w, Some(line.to_owned())),
        None => (shell(line), None),
    }
}

/// `sh -c line`.
pub fn shell(line: &str) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), line.to_owned()]
}

/// The words of a plain command line, or `None` when it needs a shell.
pub fn words(line: &str) -> Option<Vec<String>> {
    let special = |c: char| {
        c.is_ascii_control() && c != '\t'
            || matches!(
                c,
                '\'' | '"'
                    | '\\'
                    | '$'
                    | '`'
                    | '*'
                    | '?'
                    | '['
                    | ']'
                    | '~'
                    | '#'
                    | '<'
                    | '>'
                    | ';'
                    | '&'
                    | '|'
                    | '('
                    | ')'
                    | '{'
                    | '}'
                    | '!'
                    | '^'
            )
    };
    if line.chars().any(special) {
        return None;
    }
    let words: Vec<String> = line
        .split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let first = words.first()?;
    if first.contains('=') || SHELL_WORDS.contains(&first.as_str()) {
        return None;
    }
    Some(words)
}

/// The `PWD` a shell started in `cwd` exports: the one it was given
/// (`given`, else the worker's) when that is an absolute name of `cwd`,
/// else `cwd`'s physical path.
pub fn pwd(cwd: &Path, given: Option<&OsStr>) -> OsString {
    let inherited = std::env::var_os("PWD");
    let given = given.or(inherited.as_deref());
    let same = |a: &Path, b: &Path| match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    };
    if let Some(g) = given {
        let g = Path::new(g);
        if g.is_absolute() && same(g, cwd) {
            return g.as_os_str().to_owned();
        }
    }
    std::fs::canonicalize(cwd).map_or_else(|_| cwd.as_os_str().to_owned(), |p| p.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_are_split_on_blanks() {
        assert_eq!(
            words("sleep  0.05"),
            Some(vec!["sleep".to_owned(), "0.05".to_owned()])
        );
        assert_eq!(
            words("\tmake -C sub api FOO=1 "),
            Some(
                ["make", "-C", "sub", "api", "FOO=1"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
        assert_eq!(
            words("./build.sh --out=dir/ café"),
            Some(
                ["./build.sh", "--out=dir/", "café"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
    }

    #[test]
    fn anything_a_shell_would_interpret_goes_to_the_shell() {
        for line in [
            "",
            "   ",
            "echo 'a b'",
            "echo \"$HOME\"",
            "ls *.rs",
            "cat a?",
            "ls [ab]",
            "cd ~",
            "make # comment",
            "a > b",
            "a < b",
            "a | b",
            "a; b",
            "a && b",
            "a &",
            "(a)",
            "{ a; }",
            "! a",
            "a\nb",
            "a\\ b",
            "echo `date`",
            "a ^ b",
            "FOO=1 make",
            "echo -e x",
            "true",
            "cd sub",
            "exit 3",
            "test -f x",
            "[ -f x ]",
            "if",
            "time make",
            "a\rb",
        ] {
            assert_eq!(words(line), None, "{line:?}");
            assert_eq!(argv(line).0, shell(line), "{line:?}");
            assert_eq!(argv(line).1, None, "{line:?}");
        }
    }

    #[test]
    fn a_plain_command_keeps_its_line_for_the_fallback() {
        let (a, fallback) = argv("sleep 1");
        assert_eq!(a, ["sleep", "1"]);
        assert_eq!(fallback.as_deref(), Some("sleep 1"));
    }

    #[test]
    fn pwd_keeps_a_name_of_the_directory_else_its_physical_path() {
        let d = tempfile::tempdir().expect("temp dir");
        let real = d.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let real = std::fs::canonicalize(&real).expect("canonical");
        // Given a name of the directory (through the link): kept.
        assert_eq!(pwd(&link, Some(link.as_os_str())), link.as_os_str());
        // Given another directory: the physical path.
        assert_eq!(pwd(&link, Some(d.path().as_os_str())), real.as_os_str());
        // A relative name is never kept.
        assert_eq!(pwd(&link, Some(OsStr::new("link"))), real.as_os_str());
    }
}
