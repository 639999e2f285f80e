use std::path::Path;
use whittle_corpus::text::{TextSource, JANEAUSTENR_DATA_DIR};
use whittle_corpus::utterances::candidates;
fn main() {
    let docs = TextSource::parse("austen", Path::new(JANEAUSTENR_DATA_DIR))
        .unwrap()
        .load()
        .unwrap();
    for c in candidates(&docs, 2.0, 20.0) {
        println!("{}\t{}\t{}", c.source, c.transcript, c.spoken);
    }
}
