//! The `whittle` command-line tool: a thin layer over the `whittle` library.

mod bench_window;
mod commands;
mod compare_cmd;
mod compress_cmd;
mod corpus_cmd;
mod export_cmd;
mod perplexity_cmd;
mod prune_cmd;
mod ptq_cmd;
mod report_cmd;
mod rescore_cmd;
mod sensitivity_cmd;
mod subtitles;

use clap::{Parser, Subcommand};

/// Make speech-recognition models small and fast without losing accuracy.
#[derive(Parser)]
#[command(name = "whittle", version, about)]
struct Cli {
    /// Worker threads for the tensor and kernel thread pools (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// More logging (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Refuse audio inputs longer than this many seconds, from the container header where it
    /// states the length, else while decoding (transcribe, eval, quantize --calib, compress,
    /// sensitivity). `eval` records such clips as failures.
    #[arg(long, global = true, visible_alias = "max-duration", value_name = "SECONDS",
          default_value_t = whittle::audio::DEFAULT_MAX_AUDIO_SECONDS, value_parser = positive_seconds)]
    max_audio_seconds: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcribe audio files of any length (Whisper's standard decoding): text, JSON, SRT or VTT.
    Transcribe(commands::TranscribeArgs),
    /// Transcribe a dataset and score WER/CER against its transcripts.
    Eval(commands::EvalArgs),
    /// Quantize linear layers after training (RTN, MSE clipping or GPTQ; uniform or per-layer bit map) and write a .whittle file.
    Quantize(ptq_cmd::QuantizeArgs),
    /// Structured pruning (heads, FFN units, modules, layers) by a keep list or the magnitude baseline, physically removed; writes a .whittle file.
    Prune(prune_cmd::PruneArgs),
    /// Write a model in another runtime's format (whisper.cpp's ggml), keeping packed codes exact.
    Export(export_cmd::ExportArgs),
    /// Show a model's architecture and tensors.
    Inspect(commands::InspectArgs),
    /// Perplexity of a Whisper decoder on a dataset's reference transcripts (teacher-forced).
    Perplexity(perplexity_cmd::PerplexityArgs),
    /// Whisper's beam-search N-best lists of a dataset, for language-model rescoring.
    Nbest(rescore_cmd::NBestArgs),
    /// Rerank N-best lists with a GGUF language model (weight given or tuned on dev), scored as `eval`.
    Rescore(rescore_cmd::RescoreArgs),
    /// Score hypotheses in one JSONL file against references in another.
    Wer(commands::WerArgs),
    /// Quantization-aware training from a recipe (LSQ + distillation); writes a .whittle file.
    Compress(compress_cmd::CompressArgs),
    /// Per-layer quantization sensitivity at each candidate bit width (KL of the output distributions).
    Sensitivity(sensitivity_cmd::SensitivityArgs),
    /// Exact budgeted bit allocation from a sensitivity file, written as a bit map.
    Allocate(sensitivity_cmd::AllocateArgs),
    /// Benchmarks (e.g. `bench train-step`: one QAT step on a fixed batch).
    Bench(compress_cmd::BenchArgs),
    /// Build synthetic speech corpora from public-domain text (TTS engines).
    Corpus(corpus_cmd::CorpusArgs),
    /// Figures (PNG and SVG): per-layer bit widths of a model, WER vs size of an evaluation table.
    Report(report_cmd::ReportArgs),
}

/// A positive, finite number of seconds.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

fn main() {
    // Piping into `head` must end the program quietly, as for other Unix tools, not make
    // `println!` panic on a closed pipe: restore the default SIGPIPE action Rust overrides.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(n) = cli.threads {
        // candle's CPU matmul and our kernels read RAYON_NUM_THREADS; set both pools.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    // Training (compress, bench): candle's element-wise ops run on the calling thread. Its own
    // spinning pool would otherwise compete with rayon's (matmuls, fused ops) for the same
    // cores; on 2 loaded cores that cost 25-30% of a QAT step (BENCHMARKS.md). Set
    // CANDLE_NUM_THREADS to override.
    if matches!(cli.command, Command::Compress(_) | Command::Bench(_))
        && std::env::var_os("CANDLE_NUM_THREADS").is_none()
    {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    whittle::audio::set_max_audio_seconds(cli.max_audio_seconds);
    let result = match cli.command {
        Command::Transcribe(a) => commands::transcribe(a),
        Command::Eval(a) => commands::eval(a),
        Command::Inspect(a) => commands::inspect(a),
        Command::Export(a) => export_cmd::export(a),
        Command::Quantize(a) => ptq_cmd::quantize(a),
        Command::Prune(a) => prune_cmd::prune(a),
        Command::Wer(a) => commands::wer(a),
        Command::Perplexity(a) => perplexity_cmd::perplexity(a),
        Command::Nbest(a) => rescore_cmd::nbest(a),
        Command::Rescore(a) => rescore_cmd::rescore(a),
        Command::Corpus(a) => corpus_cmd::run(a),
        Command::Compress(a) => compress_cmd::compress(a),
        Command::Bench(a) => compress_cmd::bench(a),
        Command::Report(a) => report_cmd::run(a),
        Command::Sensitivity(a) => sensitivity_cmd::sensitivity(a),
        Command::Allocate(a) => sensitivity_cmd::allocate(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
