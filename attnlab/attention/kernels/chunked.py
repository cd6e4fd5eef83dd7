"""PLACEHOLDER: being written."""
from .base import FunctionKernel, register_kernel
from .math import math_attention

def chunked_attention(q, k, v, **kw):
    raise NotImplementedError

def _chunked(req):
    out, w = math_attention(req.q, req.k, req.v, mask=req.mask, bias=req.bias, score_mod=req.score_mod,
        mask_mod=req.mask_mod, scale=req.scale, dropout_p=req.dropout_p)
    return out, (w if req.return_weights else None)

CHUNKED = register_kernel(FunctionKernel("chunked", _chunked, lambda req: None))
