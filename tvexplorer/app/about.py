"""The app's About text: what task vectors, the first-epoch gradient result and ATM are, and references."""

ABOUT = r"""
### Task vectors
Fine-tune a pre-trained model with weights **θ₀** on a task and call the fine-tuned weights **θₜ**. The
*task vector* of that task is **τₜ = θₜ − θ₀**: a direction in weight space that carries what the model
learned. Task vectors can be added: the model **θ₀ + λ Σₜ cₜ τₜ** (*task arithmetic*) often handles all
tasks at once reasonably well, without any further training, and subtracting one can make the model
forget a task. Other merging methods combine the same vectors more carefully: TIES trims small entries
and resolves sign conflicts, DARE randomly drops entries and rescales the rest, TSV-M and Iso-C work
on the singular value decomposition of every weight matrix.

### Task vectors and the first-epoch gradient
Let **g₀ = ∇L(θ₀)** be the gradient of a task's training loss at the pre-trained weights, over the whole
training set. After one epoch of full-batch gradient descent with learning rate *lr*, the task vector is
exactly one gradient step: **τ₁ = −lr · g₀**. Summing such vectors over tasks is one step of gradient
descent on the sum of the task losses, so task arithmetic *is* a step of multi-task gradient descent,
and its scaling λ acts as the step size. The paper below also argues that the first epoch dominates
the whole fine-tuning trajectory, so the full task vector **τ** stays close to the direction of the
first-epoch one. The *Gradient alignment* tab measures this on the loaded cache: the cosine between τ
and −g₀, how well each epoch's update follows −g₀, what share of the total movement each epoch
contributes, per parameter tensor. Under full-batch gradient descent τ₁ = −lr · g₀ holds by
construction, so it proves nothing; the theorem's content is plain mini-batch SGD, where one epoch
of K = N/B steps gives τ₁ ≈ −lr · K · g₀ (and E epochs ≈ −lr · K · Σ g(θₑ)) up to an error of second
order in lr. Its *Theory* section measures that error at several learning rates: on log-log axes it
should follow a line of slope 1. Under AdamW the identity does not apply at all; the cosines remain.

### ATM: alternating tuning and merging
If a merge is one step of multi-task gradient descent, more steps should help. ATM does exactly that:
starting from the current merged model, fine-tune on each task for a short budget (one epoch here),
average the resulting task updates (coefficient 1/T), and repeat. The first round with a one-epoch
budget is task arithmetic over the first-epoch task vectors; later rounds keep improving the merged
model, typically well beyond one-shot task arithmetic. The *post-hoc* variant starts from the task
arithmetic merge and tunes on validation data only. The *ATM* tab runs more rounds on this cache and
saves every finished round.

### References
- G. Ilharco et al., *Editing Models with Task Arithmetic*, ICLR 2023, [arXiv:2212.04089](https://arxiv.org/abs/2212.04089).
- *On Task Vectors and Gradients*, [arXiv:2508.16082](https://arxiv.org/abs/2508.16082): task vectors after one epoch
  of full-batch gradient descent equal the negative scaled first-epoch gradient; task arithmetic as one step of
  multi-task gradient descent; the dominance of the first epoch.
- *ATM: Improving Model Merging by Alternating Tuning and Merging*, [arXiv:2411.03055](https://arxiv.org/abs/2411.03055).
- Merging methods offered here: M. Wortsman et al., *Model soups*, ICML 2022; P. Yadav et al., *TIES-Merging*,
  NeurIPS 2023; L. Yu et al., *DARE* (Language Models are Super Mario), ICML 2024; A. Gargiulo et al.,
  *Task Singular Vectors* (TSV-M), CVPR 2025; D. Marczak et al., *No Task Left Behind* (Iso-C), ICML 2025.

Every number in this app is computed exactly on the cache's fixed evaluation subsets; nothing is estimated
or looked up from a paper. Where the hardware is fast at bfloat16 (a GPU, or a CPU with AMX or AVX-512
BF16; the header says which), the merged models are evaluated with bfloat16 attention and MLP blocks and
a float32 residual stream: about twice as fast, and on the demo 99.7 % of the predictions equal
float32's. The zero-shot, fine-tuned and other reference numbers are the build's float32 ones, so a
merge with every coefficient at 0 can differ from the zero-shot bar by a few tenths of a point; start
the app with `--precision float32` for float32 throughout.
"""
