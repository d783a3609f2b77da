"""Routes no gateway may ever forward, written out here by hand from the engines' own sources.

Deliberately not derived from plugins/module_utils/localguard_engines.py: a test whose
expectation comes from the same table as the allowlist would follow that table into any mistake.
"""

from __future__ import annotations

NEVER_ALLOWED = {
    # Ollama: model management and raw blob upload.
    "ollama": (
        "POST /api/pull", "POST /api/push", "POST /api/create", "DELETE /api/delete", "POST /api/copy",
        "POST /api/blobs/sha256:0000", "HEAD /api/blobs/sha256:0000",
    ),
    # vLLM: weights, LoRA, RPC into workers, sleep/wake, profiling.
    "vllm": (
        "POST /v1/load_lora_adapter", "POST /v1/unload_lora_adapter", "POST /collective_rpc",
        "POST /update_weights", "POST /sleep", "POST /wake_up", "POST /start_profile", "POST /stop_profile",
    ),
    # llama.cpp's llama-server: KV-cache slots to disk, runtime settings, LoRA adapters.
    "llama_cpp": (
        "POST /slots/0?action=save", "POST /slots/0?action=restore", "POST /props", "GET /lora-adapters",
        "POST /lora-adapters",
    ),
}  # fmt: skip


def path_of(route: str) -> tuple[str, str]:
    method, target = route.split(" ", 1)
    return method, target.split("?", 1)[0]
