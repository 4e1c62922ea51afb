use std::fs;

use super::*;
use crate::store::StagingDir;

fn artifact(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let manifest = serde_json::json!({
        "format": PREPARED,
        "splits": {"train": {"files": {"tokens": "train.tokens.npy", "mask": "train.mask.npy"}}},
    });
    fs::write(dir.join(MANIFEST), manifest.to_string()).unwrap();
    fs::write(dir.join("train.tokens.npy"), b"t").unwrap();
    fs::write(dir.join("train.mask.npy"), b"m").unwrap();
    fs::write(dir.join("rejects.jsonl"), b"").unwrap();
}

fn refusal(target: &Path, inputs: &[PathBuf], force: bool) -> String {
    claim(target, inputs, force).unwrap_err().to_string()
}

#[test]
fn new_empty_and_own_artifacts_are_claimed() {
    let root = tempfile::tempdir().unwrap();
    claim(&root.path().join("new/deeper"), &[], false).unwrap();
    fs::create_dir(root.path().join("empty")).unwrap();
    claim(&root.path().join("empty"), &[], false).unwrap();
    artifact(&root.path().join("art"));
    claim(&root.path().join("art"), &[], false).unwrap();
}

#[test]
fn what_ftx_did_not_write_is_refused_unless_forced() {
    let root = tempfile::tempdir().unwrap();
    let user = root.path().join("user");
    fs::create_dir(&user).unwrap();
    fs::write(user.join("notes.txt"), b"keep").unwrap();
    let err = refusal(&user, &[], false);
    assert!(
        err.contains("not a prepared artifact") && err.contains("--force"),
        "{err}"
    );

    let art = root.path().join("art");
    artifact(&art);
    fs::write(art.join("notes.txt"), b"keep").unwrap();
    let err = refusal(&art, &[], false);
    assert!(err.contains("files ftx did not write (notes.txt)"), "{err}");

    let file = root.path().join("file");
    fs::write(&file, b"keep").unwrap();
    assert!(refusal(&file, &[], false).contains("is a file"));
    claim(&file, &[], true).unwrap();
    assert_eq!(fs::read(user.join("notes.txt")).unwrap(), b"keep");
}

#[test]
fn inputs_the_working_directory_and_links_are_refused_even_when_forced() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("d");
    fs::create_dir(&out).unwrap();
    let input = out.join("chat.jsonl");
    fs::write(&input, b"{}\n").unwrap();
    let err = refusal(&out, std::slice::from_ref(&input), true);
    assert!(err.contains("contains the input"), "{err}");
    // the same folder named through a link of its parent is still the input's folder
    let alias = root.path().join("alias");
    std::os::unix::fs::symlink(root.path(), &alias).unwrap();
    assert!(refusal(&alias.join("d"), &[input], true).contains("contains the input"));

    let link = root.path().join("link");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    let err = refusal(&link, &[], true);
    assert!(err.contains("symbolic link"), "{err}");

    let cwd = std::env::current_dir().unwrap();
    let err = refusal(cwd.parent().unwrap_or(&cwd), &[], true);
    assert!(err.contains("working directory"), "{err}");
}

#[test]
fn a_second_writer_fails_naming_the_path() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let first = claim(&out, &[], false).unwrap();
    let err = refusal(&out, &[], false);
    assert!(
        err.contains("another ftx process is writing there"),
        "{err}"
    );
    drop(first);
    claim(&out, &[], false).unwrap();
}

#[test]
fn stale_staging_of_this_target_only_is_removed() {
    let root = tempfile::tempdir().unwrap();
    for name in [
        ".out.abc123.partial",
        ".out.xyz.old",
        ".out.x.q1w2e3.partial",
        ".outer.a.partial",
    ] {
        fs::create_dir(root.path().join(name)).unwrap();
    }
    claim(&root.path().join("out"), &[], false).unwrap();
    let mut left: Vec<String> = fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // `.out.x.*` is the staging of a target named `out.x`, `.outer.*` of `outer`.
    // the lock file goes with the claim
    assert_eq!(left, [".out.x.q1w2e3.partial", ".outer.a.partial"]);
}

#[test]
fn publish_swaps_in_the_new_folder_and_a_forced_file() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("art");
    artifact(&out);
    let staging = StagingDir::new(&out).unwrap();
    fs::write(staging.path().join("new"), b"n").unwrap();
    staging.publish().unwrap();
    assert!(out.join("new").is_file() && !out.join(MANIFEST).exists());

    let file = root.path().join("file");
    fs::write(&file, b"old").unwrap();
    let staging = StagingDir::new(&file).unwrap();
    fs::write(staging.path().join("new"), b"n").unwrap();
    staging.publish().unwrap();
    assert!(file.join("new").is_file());
    let names: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(names.len(), 2, "no staging left: {names:?}");
}
