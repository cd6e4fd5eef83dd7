"""Explaining attention models: capture maps (and gradients), turn them into relevance, score
the explanations, rank heads, and show it all.

    from attnlab.explain import capture, METHODS, relevance_for
    cap = capture(model, inputs, target=lambda out: out.logits[0, 3])
    R = METHODS["chefer"](cap.maps("self"), cap.grads("self"))   # (L, L)
    scores = relevance_for(R, 0)                                  # (L,)

* ``capture`` / ``methods``: attention maps and the attention-based methods (raw, rollout, flow,
  Chefer's gradient-weighted rollout, attention x gradient);
* ``attribution``: the gradient and perturbation baselines (Integrated Gradients via captum,
  occlusion, random);
* ``faithfulness``: comprehensiveness, sufficiency, AOPC, deletion/insertion AUC, the
  model-randomisation check, and the table that ranks methods;
* ``heads``: head importance (Michel et al. 2019), pruning order and curve;
* ``figures``: head grids, rollout heatmaps, token saliency (PNG and HTML), alignments, patch
  overlays, pruning curves (matplotlib);
* ``pipeline`` / ``targets``: from a checkpoint or run dir and a text to relevances and files
  (``attnlab explain``); ``evaluation``: the faithfulness table with the randomisation check
  (``attnlab explain eval``) and the head report (``attnlab heads``);
* ``images``: per-patch relevance of ViT and CNN image classifiers;
* ``explorer``: the self-contained HTML explorer. The web server (``attnlab.explain.server``,
  needs fastapi) is imported on its own.
"""

from .attribution import integrated_gradients, occlusion, random_relevance
from .capture import Capture, capture
from .explorer import encode_attentions, explorer_data, write_explorer
from .figures import (
    plot_alignment, plot_head_grid, plot_patch_relevance, plot_pruning_curve, plot_rollout, plot_saliency,
    saliency_colors, saliency_html, write_saliency_html,
)
from .faithfulness import (
    HIGHER_IS_BETTER, aopc, comprehensiveness, deletion_auc, faithfulness_table, insertion_auc,
    masked_scorer, randomization_check, sufficiency,
)
from .heads import head_importance, head_mask_for, heads_to_prune, prune_heads, prune_order, pruning_curve
from .images import explain_image, image_faithfulness
from .methods import (
    METHODS, Method, attention_flow, attention_x_gradient, fuse_heads, get_method, grad_rollout, grad_rollout_seq2seq,
    raw_attention, register_method, relevance_for, residual_attention, rollout, token_relevance,
)

__all__ = [
    "Capture", "capture",
    "METHODS", "Method", "register_method", "get_method",
    "raw_attention", "rollout", "attention_flow", "grad_rollout", "grad_rollout_seq2seq", "attention_x_gradient",
    "relevance_for", "token_relevance", "fuse_heads", "residual_attention",
    "integrated_gradients", "occlusion", "random_relevance", "explain_image", "image_faithfulness",
    "HIGHER_IS_BETTER", "masked_scorer", "comprehensiveness", "sufficiency", "aopc",
    "deletion_auc", "insertion_auc", "randomization_check", "faithfulness_table",
    "head_importance", "prune_order", "heads_to_prune", "head_mask_for", "pruning_curve", "prune_heads",
    "write_explorer", "encode_attentions", "explorer_data",
    "plot_head_grid", "plot_rollout", "plot_saliency", "saliency_colors", "saliency_html",
    "write_saliency_html", "plot_alignment", "plot_patch_relevance", "plot_pruning_curve",
]

