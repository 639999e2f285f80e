//! End-to-end tests of `synthesize_corpus` and the standard splits. Tests that need a TTS engine
//! or Debian's janeaustenr print a note and return when it is absent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use whittle_corpus::engine::{EnginePaths, Engines, Voice};
use whittle_corpus::splits::{leak_check_transcripts, resolve_voices, standard_splits, SplitSizes};
use whittle_corpus::synth::{
    candidate_queue, read_manifest, synthesize_corpus, NoProgress, Outcome, Progress, SynthConfig,
};
use whittle_corpus::text::{TextSource, JANEAUSTENR_DATA_DIR};
use whittle_corpus::utterances::Partition;
use whittle_corpus::CorpusError;

/// Fast voices used by the synthesis tests.
const TEST_VOICES: &str = "espeak-ng:en-us+m3,flite:kal,espeak-ng:en-gb+f3";

fn voices_or_skip(spec: &str) -> Option<Vec<Voice>> {
    let paths = EnginePaths::default();
    let voices = resolve_voices(spec, &paths).ok()?;
    match Engines::probe(&paths, &voices) {
        Ok(_) => Some(voices),
        Err(err) => {
            whittle_corpus::skip_missing(&err.to_string());
            None
        }
    }
}

/// A small text of ordinary sentences, written by the test.
fn write_text(dir: &Path) -> PathBuf {
    let sentences = [
        "The morning was clear and the road to the village lay dry under a pale sky.",
        "Mr. Palmer walked slowly beside the hedge, counting the gates as he passed them.",
        "She had written three letters before breakfast and meant to write two more.",
        "Nobody in the house could remember when the old clock had last kept good time.",
        "On the 2nd of May the whole family drove to town in the large carriage.",
        "It was agreed that the garden should be finished before the summer was over.",
        "Mrs. Grey declared that she had never seen so fine a collection of roses.",
        "The children ran down to the river and came back with wet shoes and bright faces.",
        "A letter arrived at noon, and everybody wished to know who had sent it.",
        "He spoke of the weather, the harvest, and the price of corn at the market.",
        "Their cousin promised to visit in the autumn if the roads were good enough.",
        "The library was quiet except for the sound of rain against the tall windows.",
        "Dr. Morton said that a week of rest would do more good than any medicine.",
        "They dined at six, and afterwards the young people played cards until late.",
        "Her sister laughed at the idea, but she could not quite forget it afterwards.",
        "In 1805 the house was sold to a gentleman from the north of the county.",
        "Every window of the little cottage was open to the warm evening air.",
        "The servants had lit the fires early because the wind had turned cold.",
    ];
    let path = dir.join("story.txt");
    let text: String = sentences.chunks(3).map(|c| c.join(" ") + "\n\n").collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn config(dir: &Path, name: &str, text: &Path, voices: Vec<Voice>, seed: u64) -> SynthConfig {
    let mut config = SynthConfig::new(
        name,
        TextSource::File(text.to_path_buf()),
        voices,
        0.012,
        seed,
        dir.join(name),
    );
    config.jobs = 2;
    config
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` with its contents, except the scratch directory.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&ta),
        names(&tb),
        "different files in {} and {}",
        a.display(),
        b.display()
    );
    for ((name, x), (_, y)) in ta.iter().zip(&tb) {
        assert!(
            x == y,
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn same_seed_gives_the_same_corpus_in_librispeech_layout() {
    let Some(voices) = voices_or_skip(TEST_VOICES) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = write_text(dir.path());
    let mut a = config(dir.path(), "a", &text, voices.clone(), 42);
    a.augment = "noise=white+pink+babble,snr=10:20,reverb=0.5"
        .parse()
        .unwrap();
    let mut b = a.clone();
    b.out_dir = dir.path().join("b");
    b.jobs = 1; // a different thread count must not matter
    let report = synthesize_corpus(&a, &NoProgress, None).unwrap();
    synthesize_corpus(&b, &NoProgress, None).unwrap();
    assert!(report.hours >= 0.012, "{report:?}");
    assert_same_tree(&a.out_dir, &b.out_dir);

    let manifest = read_manifest(&a.out_dir).unwrap();
    assert_eq!(manifest.len(), report.utterances);
    for entry in &manifest {
        // LibriSpeech layout: <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
        let expected = format!("{}/{}/{}.flac", entry.speaker, entry.chapter, entry.id);
        assert_eq!(entry.audio, expected);
        assert!(entry
            .id
            .starts_with(&format!("{}-{}-", entry.speaker, entry.chapter)));
        let samples = whittle_audio::load_audio(&a.out_dir.join(&entry.audio)).unwrap();
        let seconds = samples.len() as f64 / 16_000.0;
        assert!(
            (seconds - entry.duration_s).abs() < 1e-3,
            "{}: {seconds} vs {}",
            entry.id,
            entry.duration_s
        );
        assert!(
            (2.0..=20.0).contains(&entry.duration_s),
            "{}: {} s",
            entry.id,
            entry.duration_s
        );
        let trans = read(&a.out_dir.join(format!(
            "{}/{}/{}-{}.trans.txt",
            entry.speaker, entry.chapter, entry.speaker, entry.chapter
        )));
        assert!(trans
            .lines()
            .any(|l| l == format!("{} {}", entry.id, entry.text)));
        assert!(entry
            .text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == ' ' || c == '\''));
        assert!(entry.speed.is_some_and(|s| (0.85..=1.15).contains(&s)));
        assert!(
            entry.augment.noise.is_some(),
            "noise-prob 1 gives every utterance noise"
        );
    }
    let corpus: serde_json::Value =
        serde_json::from_str(&read(&a.out_dir.join("corpus.json"))).unwrap();
    assert_eq!(corpus["config"]["seed"], 42);
    assert_eq!(corpus["speakers"].as_array().unwrap().len(), 3);
    assert!(corpus["engines"][0]["version"].as_str().unwrap().len() > 3);

    let mut c = a.clone();
    c.out_dir = dir.path().join("c");
    c.seed = 43;
    synthesize_corpus(&c, &NoProgress, None).unwrap();
    assert_ne!(
        read(&a.out_dir.join("manifest.jsonl")),
        read(&c.out_dir.join("manifest.jsonl"))
    );
}

/// Cancels the run after `limit` finished utterances.
struct CancelAfter<'a> {
    limit: usize,
    done: AtomicUsize,
    flag: &'a AtomicBool,
}

impl Progress for CancelAfter<'_> {
    fn utterance(&self, _id: &str, _outcome: Outcome, _duration_s: f64) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 >= self.limit {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Counts outcomes.
#[derive(Default)]
struct Count {
    synthesized: AtomicUsize,
    reused: AtomicUsize,
}

impl Progress for Count {
    fn utterance(&self, _id: &str, outcome: Outcome, _duration_s: f64) {
        match outcome {
            Outcome::Synthesized => self.synthesized.fetch_add(1, Ordering::SeqCst),
            Outcome::Reused => self.reused.fetch_add(1, Ordering::SeqCst),
            Outcome::Dropped => 0,
        };
    }
}

#[test]
fn interrupted_run_resumes_to_the_same_corpus() {
    let Some(voices) = voices_or_skip(TEST_VOICES) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = write_text(dir.path());
    let whole = config(dir.path(), "whole", &text, voices.clone(), 7);
    synthesize_corpus(&whole, &NoProgress, None).unwrap();

    let mut resumed = config(dir.path(), "whole", &text, voices, 7);
    resumed.out_dir = dir.path().join("resumed");
    let flag = AtomicBool::new(false);
    let stopper = CancelAfter {
        limit: 3,
        done: AtomicUsize::new(0),
        flag: &flag,
    };
    let err = synthesize_corpus(&resumed, &stopper, Some(&flag)).unwrap_err();
    assert!(
        matches!(err, CorpusError::Cancelled { finished } if finished >= 3),
        "{err}"
    );
    assert!(!resumed.out_dir.join("manifest.jsonl").exists());
    let mut flacs: Vec<(String, Vec<u8>)> = tree(&resumed.out_dir)
        .into_iter()
        .filter(|(p, _)| p.ends_with(".flac"))
        .collect();
    assert!(flacs.len() >= 3, "{} files", flacs.len());
    // A damaged file under a final name (as from a crash outside our control) is redone.
    let (victim, _) = flacs.pop().unwrap();
    std::fs::write(resumed.out_dir.join(&victim), b"fLaC trunc").unwrap();

    let count = Count::default();
    let report = synthesize_corpus(&resumed, &count, None).unwrap();
    assert!(
        count.reused.load(Ordering::SeqCst) >= 2,
        "finished utterances were redone"
    );
    assert_eq!(report.reused, count.reused.load(Ordering::SeqCst));
    assert_same_tree(&whole.out_dir, &resumed.out_dir);

    // Resuming with different options is refused.
    let mut other = resumed.clone();
    other.seed = 8;
    let err = synthesize_corpus(&other, &NoProgress, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("different options"), "{err}");
}

#[test]
fn missing_engine_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = write_text(dir.path());
    let voices = resolve_voices("espeak-ng:en-us", &EnginePaths::default()).unwrap();
    let mut config = config(dir.path(), "x", &text, voices, 1);
    config.engine_paths.espeak_ng = "/nonexistent/bin/espeak-ng".into();
    let err = synthesize_corpus(&config, &NoProgress, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/bin/espeak-ng"), "{err}");
    assert!(err.contains("apt-get install espeak-ng"), "{err}");
    assert!(
        !config.out_dir.exists(),
        "nothing is written before the engines are checked"
    );
}

#[test]
fn bad_text_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let voices = resolve_voices("flite:slt", &EnginePaths::default()).unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        ("empty.txt", b"", "is empty"),
        ("binary.dat", b"\x00\x01\x02\x03binary", "looks binary"),
        (
            "latin1.txt",
            b"Na\xefve text in Latin-1.",
            "not valid UTF-8",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let config = config(dir.path(), &format!("out-{name}"), &path, voices.clone(), 1);
        let err = synthesize_corpus(&config, &NoProgress, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected) && err.contains(name),
            "{name}: {err}"
        );
    }
    // Text with no sentence of speakable length.
    let path = dir.path().join("short.txt");
    std::fs::write(&path, "Yes. No. Fine.").unwrap();
    let config = config(dir.path(), "out-short", &path, voices, 1);
    let err = synthesize_corpus(&config, &NoProgress, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no sentence"), "{err}");
}

#[test]
fn standard_split_pools_share_no_sentence_and_skip_the_leak_check_chapter() {
    let austen = Path::new(JANEAUSTENR_DATA_DIR);
    if !austen.join("Rdata.rdx").exists() {
        whittle_corpus::skip_missing("r-cran-janeaustenr is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Voice availability does not matter for the sentence pools; use explicit fixed voices.
    let paths = EnginePaths::default();
    let configs = match standard_splits(dir.path(), SplitSizes::default(), 0, austen, &paths) {
        Ok(c) => c,
        Err(err) => {
            whittle_corpus::skip_missing(&err.to_string());
            return;
        }
    };
    let leak: HashSet<String> = leak_check_transcripts(austen)
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        leak.len() > 20,
        "leak-check list has {} sentences",
        leak.len()
    );
    let mut pools = Vec::new();
    for config in &configs {
        let queue = candidate_queue(config).unwrap();
        let texts: HashSet<String> = queue.iter().map(|c| c.transcript.clone()).collect();
        let sources: HashSet<String> = queue.iter().map(|c| c.source.clone()).collect();
        assert!(
            texts.is_disjoint(&leak),
            "{} contains leak-check sentences",
            config.name
        );
        assert!(
            queue
                .iter()
                .all(|c| !c.source.starts_with("sensesensibility/1/")),
            "{} uses Sense and Sensibility chapter 1",
            config.name
        );
        assert!(queue.iter().all(|c| Some(c.partition) == config.partition));
        // Enough material for the default sizes at 2.7 words per second.
        let hours: f64 = queue.iter().map(|c| c.estimated_s()).sum::<f64>() / 3600.0;
        assert!(
            hours > 1.5 * config.hours,
            "{}: only {hours:.2} h of text",
            config.name
        );
        pools.push((config.name.clone(), texts, sources));
    }
    for i in 0..pools.len() {
        for j in i + 1..pools.len() {
            let (a, b) = (&pools[i], &pools[j]);
            // The two dev splits read the same dev pool (their voices differ).
            if a.0.starts_with("synth-dev") && b.0.starts_with("synth-dev") {
                continue;
            }
            assert!(
                a.1.is_disjoint(&b.1),
                "{} and {} share a sentence",
                a.0,
                b.0
            );
            assert!(a.2.is_disjoint(&b.2), "{} and {} share a source", a.0, b.0);
        }
    }
    assert!(configs[0].partition == Some(Partition::Train));
    assert!(pools[0]
        .2
        .iter()
        .all(|s| !s.starts_with("sensesensibility/")));
}

#[test]
fn tiny_standard_splits_have_disjoint_manifests() {
    let austen = Path::new(JANEAUSTENR_DATA_DIR);
    if !austen.join("Rdata.rdx").exists() {
        whittle_corpus::skip_missing("r-cran-janeaustenr is not installed");
        return;
    }
    let paths = EnginePaths::default();
    let dir = tempfile::tempdir().unwrap();
    let sizes = SplitSizes {
        train: 0.004,
        dev: 0.002,
        test_clean: 0.002,
        test_other: 0.002,
        dev_other: 0.002,
    };
    let reports = match whittle_corpus::splits::build_standard_splits(
        dir.path(),
        sizes,
        5,
        austen,
        &paths,
        2,
        None,
        &NoProgress,
    ) {
        Ok(r) => r,
        Err(err @ (CorpusError::EngineMissing { .. } | CorpusError::VoiceMissing { .. })) => {
            whittle_corpus::skip_missing(&err.to_string());
            return;
        }
        Err(err) => panic!("{err}"),
    };
    assert_eq!(reports.len(), 5);
    // synth-dev-other reads the dev sentence pool like synth-dev, so it is checked apart.
    let texts: Vec<HashSet<String>> = [
        "synth-train",
        "synth-dev",
        "synth-test-clean",
        "synth-test-other",
    ]
    .iter()
    .map(|name| {
        read_manifest(&dir.path().join(name))
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect()
    })
    .collect();
    for i in 0..4 {
        assert!(!texts[i].is_empty());
        for j in i + 1..4 {
            assert!(
                texts[i].is_disjoint(&texts[j]),
                "splits {i} and {j} share a sentence"
            );
        }
    }
    let other = read_manifest(&dir.path().join("synth-test-other")).unwrap();
    // Noise on every test-other utterance; reverb on about half (none is possible on a tiny set).
    assert!(other.iter().all(|e| e.augment.noise.is_some()));
    // The check is written beside the splits; these tiny test splits fail only the word count.
    let check = whittle_corpus::split_check::read_splits_check(dir.path()).unwrap();
    assert_eq!(check.splits.len(), 5);
    assert_eq!(check.problems.len(), 2, "{:?}", check.problems);
    let dev_other = read_manifest(&dir.path().join("synth-dev-other")).unwrap();
    assert!(!dev_other.is_empty());
    assert!(dev_other.iter().all(|e| !texts[0].contains(&e.text)));
    let train_voices: HashSet<String> = read_manifest(&dir.path().join("synth-train"))
        .unwrap()
        .into_iter()
        .map(|e| e.voice)
        .collect();
    assert!(dev_other.iter().all(|e| !train_voices.contains(&e.voice)));
    assert!(check
        .overlaps
        .iter()
        .any(|o| o.test == "synth-dev-other" && o.training == "synth-train"));
    assert!(check
        .problems
        .iter()
        .all(|p| p.contains("reference words, fewer than")));
    let clean = read_manifest(&dir.path().join("synth-test-clean")).unwrap();
    assert!(clean
        .iter()
        .all(|e| e.augment.noise.is_none() && e.augment.rt60_s.is_none()));
    assert!(clean.iter().all(|e| [
        "festival:slt-hts",
        "flite:slt",
        "flite:rms",
        "pico:en-US",
        "pico:en-GB"
    ]
    .contains(&e.voice.as_str())));
    assert!(read(&dir.path().join("leak-check.txt"))
        .starts_with("THE FAMILY OF DASHWOOD HAD LONG BEEN SETTLED IN SUSSEX"));
}
