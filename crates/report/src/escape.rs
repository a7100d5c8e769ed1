//! Text made safe for report.md's tables. Its own module because both the report's body
//! (`markdown.rs`) and the cause table it embeds (`cause_table.rs`) escape cells, and the
//! body calls the table: neither can hold the helper without needing the other.

/// Escapes text for a markdown table cell.
pub fn cell(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace('<', "&lt;").replace('>', "&gt;").replace(['\n', '\r'], " ")
}
