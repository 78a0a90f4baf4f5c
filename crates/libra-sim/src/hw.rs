//! The latency model: a roofline over FLOPs and HBM bytes per engine step, plus tensor-parallel
//! all-reduces and a fixed per-step overhead; host-link transfers are bytes over a bandwidth.
use std::fmt::Write;

/// A dense decoder-only transformer (Llama family).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    pub name: &'static str,
    pub layers: u32,
    pub hidden: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub ffn: u32,
    pub vocab: u32,
    /// Parameter count.
    pub params: f64,
}

impl ModelShape {
    pub fn llama3_8b() -> Self {
        ModelShape {
            name: "llama3-8b",
            layers: 32,
            hidden: 4096,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            ffn: 14336,
            vocab: 128256,
            params: 8.03e9,
        }
    }
    pub fn llama2_34b() -> Self {
        ModelShape {
            name: "llama2-34b",
            layers: 48,
            hidden: 8192,
            heads: 64,
            kv_heads: 8,
            head_dim: 128,
            ffn: 22016,
            vocab: 32000,
            params: 33.7e9,
        }
    }
    pub fn llama3_70b() -> Self {
        ModelShape {
            name: "llama3-70b",
            layers: 80,
            hidden: 8192,
            heads: 64,
            kv_heads: 8,
            head_dim: 128,
            ffn: 28672,
            vocab: 128256,
            params: 70.6e9,
        }
    }
    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama3-8b" => Self::llama3_8b(),
            "llama2-34b" => Self::llama2_34b(),
            "llama3-70b" => Self::llama3_70b(),
            _ => return None,
        })
    }

    /// bf16 K and V of one token, all layers, whole model (before tensor-parallel sharding).
    pub fn kv_bytes_per_token(&self) -> f64 {
        2.0 * self.layers as f64 * self.kv_heads as f64 * self.head_dim as f64 * 2.0
    }

    /// Parameters of a LoRA adapter of `rank` on every linear layer (q, k, v, o, gate, up,
    /// down): rank x (fan-in + fan-out) per matrix.
    pub fn lora_params(&self, rank: u32) -> f64 {
        let d = self.hidden as f64;
        let q = (self.heads * self.head_dim) as f64;
        let kv = (self.kv_heads * self.head_dim) as f64;
        let f = self.ffn as f64;
        let per_layer = (d + q) + 2.0 * (d + kv) + (q + d) + 2.0 * (d + f) + (f + d);
        rank as f64 * per_layer * self.layers as f64
    }
}

/// One accelerator.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub name: &'static str,
    /// Dense bf16 peak, FLOP/s.
    pub peak_flops: f64,
    /// HBM bandwidth, bytes/s.
    pub hbm_bytes_per_s: f64,
    pub mem_bytes: f64,
    /// Host link (PCIe) bandwidth per GPU, bytes/s, as achieved by large copies.
    pub link_bytes_per_s: f64,
    /// GPU-to-GPU bandwidth per GPU (NVLink), bytes/s.
    pub nvlink_bytes_per_s: f64,
}

impl Gpu {
    /// H800 SXM 80 GB: H100 compute and HBM3, NVLink cut to 400 GB/s; PCIe 5.0 x16 (64 GB/s
    /// raw, about 50 GB/s achieved by pinned copies).
    pub fn h800() -> Self {
        Gpu {
            name: "h800-80gb",
            peak_flops: 989e12,
            hbm_bytes_per_s: 3.35e12,
            mem_bytes: 80e9,
            link_bytes_per_s: 50e9,
            nvlink_bytes_per_s: 400e9,
        }
    }
    /// H200 141 GB: same compute as H100, HBM3e at 4.8 TB/s, NVLink 900 GB/s, PCIe 5.0.
    pub fn h200() -> Self {
        Gpu {
            name: "h200-141gb",
            peak_flops: 989e12,
            hbm_bytes_per_s: 4.8e12,
            mem_bytes: 141e9,
            link_bytes_per_s: 50e9,
            nvlink_bytes_per_s: 900e9,
        }
    }
    /// L40S 48 GB (NVIDIA L40S datasheet): 362 TFLOP/s dense BF16 (733 with sparsity), 48 GB
    /// GDDR6 at 864 GB/s, PCIe 4.0 x16 (64 GB/s both directions together, 32 GB/s each way;
    /// 25 GB/s achieved by pinned copies, the same share as the H800's 50 of 64), no NVLink:
    /// peer traffic would cross PCIe too.
    pub fn l40s() -> Self {
        Gpu {
            name: "l40s-48gb",
            peak_flops: 362e12,
            hbm_bytes_per_s: 864e9,
            mem_bytes: 48e9,
            link_bytes_per_s: 25e9,
            nvlink_bytes_per_s: 25e9,
        }
    }
    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "h800" => Self::h800(),
            "h200" => Self::h200(),
            "l40s" => Self::l40s(),
            _ => return None,
        })
    }
}

/// A serving instance: model, GPU, tensor-parallel degree and the efficiency factors.
#[derive(Debug, Clone, PartialEq)]
pub struct Hardware {
    pub model: ModelShape,
    pub gpu: Gpu,
    pub tp: u32,
    /// Achieved fraction of peak FLOP/s in dense matmuls.
    pub compute_eff: f64,
    /// Achieved fraction of HBM bandwidth.
    pub mem_eff: f64,
    /// Scheduler, sampling and launch overhead of one engine step, seconds.
    pub step_overhead_s: f64,
    /// Latency of one tensor-parallel all-reduce, seconds.
    pub allreduce_latency_s: f64,
    /// Share of GPU memory the engine may use (vLLM's gpu_memory_utilization).
    pub mem_util: f64,
    /// Activations and workspace kept free per GPU, bytes.
    pub activation_reserve_bytes: f64,
    /// Host memory for the host tier, per GPU, bytes.
    pub host_bytes_per_gpu: f64,
    /// Fixed cost of one host-link batch (launch and synchronisation), seconds.
    pub link_batch_latency_s: f64,
}

/// What one engine step computes.
#[derive(Debug, Clone, Default)]
pub struct StepLoad {
    /// (new tokens, tokens already in the KV cache) of each prefill chunk.
    pub prefill: Vec<(u32, u32)>,
    /// Decoding sequences and the sum of their context lengths.
    pub decode_seqs: u32,
    pub decode_context: u64,
    /// Sum over tokens of the LoRA parameters applied to them.
    pub lora_param_tokens: f64,
    /// Bytes of the distinct adapters the batch reads.
    pub adapter_bytes: f64,
}

impl Hardware {
    pub fn preset(name: &str) -> Option<Self> {
        let (model, gpu, tp) = match name {
            "llama3-8b-h800" => (ModelShape::llama3_8b(), Gpu::h800(), 1),
            "llama2-34b-h800" => (ModelShape::llama2_34b(), Gpu::h800(), 4),
            "llama3-70b-h800" => (ModelShape::llama3_70b(), Gpu::h800(), 8),
            "llama3-8b-h200" => (ModelShape::llama3_8b(), Gpu::h200(), 1),
            "llama3-70b-h200" => (ModelShape::llama3_70b(), Gpu::h200(), 4),
            "llama3-8b-l40s" => (ModelShape::llama3_8b(), Gpu::l40s(), 1),
            _ => return None,
        };
        Some(Hardware {
            model,
            gpu,
            tp,
            compute_eff: 0.6,
            mem_eff: 0.8,
            step_overhead_s: 1.0e-3,
            allreduce_latency_s: 8e-6,
            mem_util: 0.9,
            activation_reserve_bytes: 3e9,
            host_bytes_per_gpu: 128e9,
            link_batch_latency_s: 20e-6,
        })
    }
    pub const PRESETS: [&'static str; 6] = [
        "llama3-8b-h800",
        "llama2-34b-h800",
        "llama3-70b-h800",
        "llama3-8b-h200",
        "llama3-70b-h200",
        "llama3-8b-l40s",
    ];

    /// Bytes of one KV block of `block_tokens` tokens on one GPU (heads are split by TP).
    pub fn kv_block_bytes(&self, block_tokens: u32) -> f64 {
        self.model.kv_bytes_per_token() * block_tokens as f64 / self.tp as f64
    }
    pub fn weight_bytes_per_gpu(&self) -> f64 {
        self.model.params * 2.0 / self.tp as f64
    }
    /// Bytes of an adapter's shard on one GPU.
    pub fn adapter_bytes(&self, rank: u32) -> f64 {
        self.model.lora_params(rank) * 2.0 / self.tp as f64
    }
    /// GPU blocks left for adapters and KV after weights and the activation reserve.
    pub fn gpu_blocks(&self, block_tokens: u32) -> u32 {
        let free =
            self.gpu.mem_bytes * self.mem_util - self.weight_bytes_per_gpu() - self.activation_reserve_bytes;
        (free / self.kv_block_bytes(block_tokens)).floor().max(1.0) as u32
    }
    pub fn host_blocks(&self, block_tokens: u32) -> u32 {
        (self.host_bytes_per_gpu / self.kv_block_bytes(block_tokens)).floor().max(0.0) as u32
    }
    /// Host-link time of `bytes` on one GPU's link, seconds (every rank copies its shard in
    /// parallel over its own link).
    pub fn link_time_s(&self, bytes: f64) -> f64 {
        self.link_batch_latency_s + bytes / self.gpu.link_bytes_per_s
    }

    /// Duration of one engine step, seconds: max(compute, memory) + all-reduces + overhead.
    pub fn step_time_s(&self, load: &StepLoad) -> f64 {
        let m = &self.model;
        let tp = self.tp as f64;
        let prefill_tokens: f64 = load.prefill.iter().map(|&(n, _)| n as f64).sum();
        let tokens = prefill_tokens + load.decode_seqs as f64;
        if tokens == 0.0 {
            return 0.0;
        }
        let attn_unit = 4.0 * m.layers as f64 * (m.heads * m.head_dim) as f64;
        let prefill_attn: f64 =
            load.prefill.iter().map(|&(n, c)| attn_unit * n as f64 * (c as f64 + n as f64 / 2.0)).sum();
        let decode_attn = attn_unit * load.decode_context as f64;
        let flops =
            (2.0 * m.params * tokens + 2.0 * load.lora_param_tokens + prefill_attn + decode_attn) / tp;
        let kv_read_tokens: f64 =
            load.prefill.iter().map(|&(n, c)| (n + c) as f64).sum::<f64>() + load.decode_context as f64;
        let bytes = self.weight_bytes_per_gpu()
            + load.adapter_bytes
            + kv_read_tokens * m.kv_bytes_per_token() / tp
            // Activations in and out of every layer, bf16.
            + tokens * m.hidden as f64 * 2.0 * 4.0 * m.layers as f64;
        let compute = flops / (self.gpu.peak_flops * self.compute_eff);
        let memory = bytes / (self.gpu.hbm_bytes_per_s * self.mem_eff);
        let comm = if self.tp > 1 {
            // Two ring all-reduces of the activations per layer.
            let msg = tokens * m.hidden as f64 * 2.0;
            2.0 * m.layers as f64
                * (self.allreduce_latency_s + 2.0 * (tp - 1.0) / tp * msg / self.gpu.nvlink_bytes_per_s)
        } else {
            0.0
        };
        compute.max(memory) + comm + self.step_overhead_s
    }

    /// One layer's share of a step, seconds: the step without its fixed overhead, split evenly
    /// over the layers (every layer of a dense decoder does the same work).
    pub fn layer_time_s(&self, load: &StepLoad) -> f64 {
        let t = self.step_time_s(load);
        if t == 0.0 {
            return 0.0;
        }
        (t - self.step_overhead_s).max(0.0) / self.model.layers.max(1) as f64
    }

    /// Prefill throughput of a typical chunk, tokens per microsecond (the cost hint an engine
    /// would measure and hand to the cache).
    pub fn prefill_tokens_per_us(&self, chunk: u32) -> f64 {
        let t = self.step_time_s(&StepLoad { prefill: vec![(chunk, 0)], ..Default::default() });
        chunk as f64 / (t * 1e6)
    }

    /// A human-readable statement of the model.
    pub fn describe(&self, block_tokens: u32) -> String {
        let m = &self.model;
        let g = &self.gpu;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "model {}: {} layers, hidden {}, {} heads, {} KV heads, head dim {}, ffn {}, {:.2}B params",
            m.name,
            m.layers,
            m.hidden,
            m.heads,
            m.kv_heads,
            m.head_dim,
            m.ffn,
            m.params / 1e9
        );
        let _ = writeln!(
            s,
            "gpu {} x{} (TP): {:.0} TFLOP/s bf16 x {:.2}, HBM {:.2} TB/s x {:.2}, {:.0} GB x {:.2}, \
             host link {:.0} GB/s each way (one FIFO queue per direction per GPU, {:.0} us per batch), NVLink {:.0} GB/s",
            g.name,
            self.tp,
            g.peak_flops / 1e12,
            self.compute_eff,
            g.hbm_bytes_per_s / 1e12,
            self.mem_eff,
            g.mem_bytes / 1e9,
            self.mem_util,
            g.link_bytes_per_s / 1e9,
            self.link_batch_latency_s * 1e6,
            g.nvlink_bytes_per_s / 1e9
        );
        let kvb = self.kv_block_bytes(block_tokens);
        let _ = writeln!(
            s,
            "pool per GPU: {} blocks of {} tokens x {:.0} KiB = {:.1} GB (after {:.1} GB weights, {:.1} GB reserve); \
             host tier {} blocks ({:.0} GB)",
            self.gpu_blocks(block_tokens),
            block_tokens,
            kvb / 1024.0,
            self.gpu_blocks(block_tokens) as f64 * kvb / 1e9,
            self.weight_bytes_per_gpu() / 1e9,
            self.activation_reserve_bytes / 1e9,
            self.host_blocks(block_tokens),
            self.host_bytes_per_gpu / 1e9
        );
        let p1k = self.step_time_s(&StepLoad { prefill: vec![(1024, 0)], ..Default::default() });
        let d32 =
            self.step_time_s(&StepLoad { decode_seqs: 32, decode_context: 32 * 1024, ..Default::default() });
        let _ = writeln!(
            s,
            "step model: max(FLOPs / eff. peak, bytes / eff. HBM) + 2 all-reduces/layer + {:.1} ms; \
             prefill 1024 tokens = {:.1} ms, decode 32 x 1k ctx = {:.1} ms; KV block over the link = {:.1} us; \
             rank-64 adapter = {:.0} MB, {:.2} ms over the link",
            self.step_overhead_s * 1e3,
            p1k * 1e3,
            d32 * 1e3,
            self.link_time_s(kvb) * 1e6,
            self.adapter_bytes(64) / 1e6,
            self.link_time_s(self.adapter_bytes(64)) * 1e3
        );
        s
    }
}
