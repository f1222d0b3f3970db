"""The Triton kernels compile for real GPUs (sm_80, sm_90), checked on a machine without one.

The interpreter runs kernels as Python and misses what only the compiler rejects (non-constexpr
globals, dot shapes, type mismatches). `triton.compile` with an explicit target needs no driver, so
a subprocess without TRITON_INTERPRET compiles every kernel down to a cubin with the bundled ptxas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CODE = textwrap.dedent(
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from zeroseg.kernels import triton_similarity as ts, triton_upsample as tu

    def build(fn, types, consts, arch, num_warps=4):
        sig = {a: "constexpr" if a in consts else types.get(a, "i32") for a in fn.arg_names}
        src = ASTSource(fn=fn, signature=sig, constexprs=consts)
        triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})

    f32 = "*fp32"
    for arch, dtypes in ((90, ("fp32", "fp16", "bf16")), (80, ("bf16",))):
        for dt in dtypes:
            ieee, bd = dt == "fp32", 32 if dt == "fp32" else 64
            ptrs = dict(x_ptr="*" + dt, e_ptr="*" + dt, scale="fp32")
            stats = dict(ptrs, inv_ptr=f32, m_ptr=f32, l_ptr=f32, tv_ptr=f32, ti_ptr="*i32")
            for topk, kp, bm, nw in ((1, 1, 128, 8), (3, 4, 16, 4)):
                consts = dict(TOPK=topk, KP=kp, UPCAST=False, IEEE=ieee, BLOCK_M=bm, BLOCK_C=64, BLOCK_D=bd)
                build(ts._sim_stats_kernel, stats, consts, arch, nw)
            probs = dict(ptrs, inv_ptr=f32, mf_ptr=f32, lf_ptr=f32, p_ptr=f32)
            consts = dict(UPCAST=False, IEEE=ieee, BLOCK_M=64, BLOCK_C=64, BLOCK_D=bd)
            build(ts._sim_probs_kernel, probs, consts, arch)
            up = dict(maps_ptr="*" + dt, table_ptr="*i32", probs_ptr=f32, out_ptr="*u8", score_ptr=f32)
            up.update(ratio_h="fp32", ratio_w="fp32", bg_thresh="fp32")
            consts = dict(HAS_PROBS=dt == "fp16", WRITE_BEST=False, SAME_H=False, SAME_W=dt == "bf16")
            build(tu._upsample_labels_kernel, up, dict(consts, BLOCK=1024), arch)
    comb = dict(m_ptr=f32, l_ptr=f32, tv_ptr=f32, ti_ptr="*i32", mf_ptr=f32, lf_ptr=f32, prob_ptr=f32)
    build(ts._sim_combine_kernel, dict(comb, idx_ptr="*i64"), dict(TOPK=3, KP=4, BLOCK_M=32, BLOCK_S=16), 90)
    print("compiled")
    """
)


def _has_ptxas() -> bool:
    try:
        import triton
    except ImportError:
        return False
    root = os.path.dirname(triton.__file__)
    return os.path.exists(os.path.join(root, "backends", "nvidia", "bin", "ptxas"))


@pytest.mark.skipif(not _has_ptxas(), reason="needs triton with its bundled NVIDIA ptxas")
def test_kernels_compile_for_sm80_and_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("compiled")
