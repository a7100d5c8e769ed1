mod report;

fn main() {
    let _ = report::write;
}
