//! The root README's quick start is the same program as this crate's (which rustdoc compiles
//! and runs; the root README's is compiled and run too, through `RootReadme` in `lib.rs`).

/// The fenced code blocks (with their info strings) of section `## Quick start` of `text`.
fn quick_start(text: &str) -> Vec<String> {
    let section = text
        .split("\n## Quick start\n")
        .nth(1)
        .expect("a Quick start section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn root_readme_quick_start_matches_the_facade_crates() {
    let root = include_str!("../../README.md");
    let facade = include_str!("../README.md");
    let blocks = quick_start(facade);
    assert!(
        blocks.iter().any(|b| b.starts_with("rust\n")),
        "a Rust block in durable/README.md"
    );
    assert_eq!(
        quick_start(root),
        blocks,
        "README.md's quick start differs from durable/README.md's: copy it over"
    );
    for block in &blocks {
        assert!(
            !block.contains("durable_core") && !block.contains("durable_sql"),
            "the quick start uses the facade crate only: {block}"
        );
    }
}
