//! What CPU a figure was measured on, and which kernels whittle picks on it (issue 18: every
//! benchmark records the machine beside its figures, since the same binary runs different code
//! on AVX2-only, AVX-512 and AMX machines).

use serde::Serialize;

use whittle_kernels::kernels::{sparse_ternary_isa, Isa};

/// The instruction-set extensions that change what runs: whittle's kernels, candle's `gemm`,
/// and PyTorch's oneDNN paths (bf16 and AMX) on the other side of a comparison. Names as Linux
/// `/proc/cpuinfo` spells them.
const REPORTED_FLAGS: [&str; 13] = [
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
];

/// The machine and whittle's kernel choices on it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name (`/proc/cpuinfo`), or `unknown`.
    pub cpu: String,
    /// Logical CPUs the process may use.
    pub logical_cpus: usize,
    /// The extensions of [`REPORTED_FLAGS`] this CPU has.
    pub flags: Vec<String>,
    /// Packed weight kernels (`whittle_kernels::kernels`).
    pub packed_kernels: &'static str,
    /// Sparse ternary kernel.
    pub sparse_ternary_kernel: &'static str,
    /// Dense f32 matrix products (candle's CPU backend, the `gemm` crate; whittle enables none
    /// of its optional AVX-512 kernels).
    pub dense_f32_gemm: &'static str,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_cpuinfo(&cpuinfo)
    }

    /// The report for a `/proc/cpuinfo` text (the kernel choices are this process's).
    pub fn from_cpuinfo(cpuinfo: &str) -> Self {
        let field = |name: &str| {
            cpuinfo.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        let line = field("flags").unwrap_or_default();
        let present: Vec<&str> = line.split_whitespace().collect();
        let flags = REPORTED_FLAGS
            .iter()
            .filter(|r| present.contains(r))
            .map(|r| r.to_string())
            .collect();
        Self {
            cpu: field("model name").unwrap_or_else(|| "unknown".into()),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            flags,
            packed_kernels: match Isa::detect() {
                Isa::Avx512Vnni => "AVX2+FMA, AVX-512 VNNI int8 matrix-matrix",
                Isa::Avx2Fma => "AVX2+FMA",
                Isa::Scalar => "scalar",
            },
            sparse_ternary_kernel: sparse_ternary_isa(),
            dense_f32_gemm: if Isa::Avx2Fma.is_available() {
                "gemm crate, AVX2+FMA"
            } else {
                "gemm crate, SSE or scalar"
            },
        }
    }

    /// One line: `CPU (N logical CPUs; flags ...; packed: ..., dense f32: ...)`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({} logical CPUs; {}; packed kernels {}; sparse ternary {}; dense f32 {})",
            self.cpu,
            self.logical_cpus,
            if self.flags.is_empty() {
                "no AVX2".to_string()
            } else {
                self.flags.join(" ")
            },
            self.packed_kernels,
            self.sparse_ternary_kernel,
            self.dense_f32_gemm
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_model_name_and_only_the_reported_flags_in_their_order() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) \
                    Platinum 8481C CPU @ 2.70GHz\nflags\t\t: fpu sse2 amx_tile avx512f avx2 fma \
                    avx512_bf16 sha_ni\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R)\n";
        let m = Machine::from_cpuinfo(text);
        assert_eq!(m.cpu, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz");
        assert_eq!(
            m.flags,
            ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
        );
        assert!(m
            .summary()
            .starts_with("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz ("));
        let empty = Machine::from_cpuinfo("");
        assert_eq!(empty.cpu, "unknown");
        assert!(empty.flags.is_empty());
        assert!(empty.summary().contains("no AVX2"));
    }
}
