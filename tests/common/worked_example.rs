//! The worked example of FORMAT.md 18, as the document prints it.

/// The bytes of the file of FORMAT.md 18.8, rebuilt from its `xxd` dump in `format_md` (the
/// document's text), with the offsets checked to be contiguous.
pub fn worked_example_bytes(format_md: &str) -> Vec<u8> {
    let dump = format_md
        .split("### 18.8 The whole file")
        .nth(1)
        .and_then(|section| section.split("```text\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("FORMAT.md 18.8 has a text block with the dump");
    let mut bytes = Vec::new();
    for line in dump.lines().filter(|l| !l.trim().is_empty()) {
        // xxd: 8 hex digits of offset, ": ", then up to 16 bytes as 8 groups of 4 hex digits
        // in columns 10..49; the ASCII column follows and is ignored.
        let offset = usize::from_str_radix(&line[..8], 16).expect("offset");
        assert_eq!(
            offset,
            bytes.len(),
            "the dump skips or repeats bytes at {line}"
        );
        let hex: String = line
            .get(10..49)
            .unwrap_or(&line[10..])
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        bytes.extend(hex::decode(&hex).unwrap_or_else(|e| panic!("{line}: {e}")));
    }
    bytes
}
