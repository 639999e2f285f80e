//! Training-time augmentation (`[augment]`) on the tiny random Whisper: the trainer applies it
//! (the first step's loss moves), a killed run resumes bit for bit with it, and recipe errors
//! name their field.

mod common_train;

use common_train::{examples, prompt, straight_and_resumed, teacher, trained_state, TRAIN};
use whittle::train::trainer::Trainer;
use whittle::train::Recipe;

const AUGMENT: &str = "[augment]\nnoise = [\"brown\", \"babble\"]\nnoise_prob = 1.0\n\
                       snr_db = [5.0, 15.0]\nreverb_prob = 0.5\nrt60_s = [0.2, 0.4]\n\
                       speed_prob = 0.5\nspeed = [0.85, 1.15]\n";

fn recipe(augment: &str) -> Recipe {
    Recipe::parse(
        &format!("name = \"aug\"\n[quant]\nbits = 4\ngroup = 32\n{augment}{TRAIN}"),
        "test",
    )
    .unwrap()
}

#[test]
fn augmentation_changes_the_batches_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);
    let first_loss = |augment: &str| {
        let mut t = Trainer::new(recipe(augment), teacher(), ex.clone(), prompt(), None).unwrap();
        t.train_step().unwrap().loss
    };
    let (clean, augmented) = (first_loss(""), first_loss(AUGMENT));
    assert_ne!(clean, augmented, "the [augment] section changed nothing");
    assert_eq!(
        augmented,
        first_loss(AUGMENT),
        "augmentation is not deterministic"
    );

    let r = recipe(AUGMENT);
    let make = || Trainer::new(r.clone(), teacher(), ex.clone(), prompt(), None).unwrap();
    let (straight, resumed) = straight_and_resumed(make, dir.path());
    assert!(
        trained_state(&resumed) == trained_state(&straight),
        "parameters or optimizer moments differ after resume with augmentation"
    );
}

#[test]
fn augment_settings_are_checked() {
    for (text, field) in [
        ("[augment]\nnoise_prob = 1.5\n", "augment.noise_prob"),
        ("[augment]\nreverb_prob = -0.1\n", "augment.reverb_prob"),
        ("[augment]\nsnr_db = [30.0, 5.0]\n", "augment.snr_db"),
        ("[augment]\nrt60_s = [0.0, 0.5]\n", "augment.rt60_s"),
        ("[augment]\nspeed_prob = 2.0\n", "augment.speed_prob"),
        ("[augment]\nspeed = [1.2, 0.8]\n", "augment.speed"),
        ("[augment]\nspeed = [0.1, 1.0]\n", "augment.speed"),
        ("[augment]\nnoise = []\n", "augment.noise"),
        ("[augment]\nnoise = [\"purple\"]\n", "purple"),
        ("[augment]\ngain = 2.0\n", "gain"),
    ] {
        let err = Recipe::parse(
            &format!("name = \"aug\"\n[quant]\nbits = 4\n{text}{TRAIN}"),
            "r.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(field), "`{text}`: {err}");
    }
}
