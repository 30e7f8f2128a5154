"""One line of text per video, loosely matching the dominant expression (or mimicry reaction) of its
speaker(s)."""

from __future__ import annotations

import numpy as np

from pipeline.tasks.definitions import EXPR_CLASSES, MIMICRY_NAMES

SENTENCES: dict[str, tuple[str, ...]] = {
    "Neutral": (
        "So today I want to walk you through how my week went.",
        "I was thinking about what to cook for dinner tonight.",
        "Let me tell you about the train ride this morning.",
    ),
    "Anger": (
        "I cannot believe they cancelled it again without telling anyone.",
        "This is the third time I have asked and nobody listens.",
        "Honestly that was completely unfair and I am fed up.",
    ),
    "Disgust": (
        "Ugh, the fridge smelled like something had died in there.",
        "That was the worst thing I have ever tasted, just awful.",
        "I really did not want to see that, it was gross.",
    ),
    "Fear": (
        "I heard a noise downstairs and I was too scared to move.",
        "The car in front braked and I thought we would crash.",
        "I am really nervous about the results coming out tomorrow.",
    ),
    "Happiness": (
        "We won the match and everyone was cheering, it was amazing.",
        "I am so happy you could all make it, thank you so much.",
        "The puppy finally learned to sit and I could not stop laughing.",
    ),
    "Sadness": (
        "I miss my grandmother a lot, the house feels empty now.",
        "It did not work out in the end and I feel pretty low.",
        "Everyone left after the holidays and it is quiet again.",
    ),
    "Surprise": (
        "Wait, what? You actually bought the tickets already?",
        "I opened the door and the whole family was standing there.",
        "No way, I did not expect that at all.",
    ),
    "Other": (
        "Hmm, I am not sure what to make of that, let me think.",
        "Well, it was one of those days, you know how it is.",
        "I guess we will see how it goes next week.",
    ),
}

# Hume-Vidmimic2 clips: what someone might say while reacting, per dominant mimicry dimension.
REACTION_SENTENCES: dict[str, tuple[str, ...]] = {
    "Admiration": (
        "Wow, that is really impressive, how did they do that?",
        "Oh, that is beautiful, I love how carefully it was made.",
    ),
    "Amusement": (
        "Ha ha, oh no, that is hilarious, look at him!",
        "Ha, I did not see that coming, that is so funny.",
    ),
    "Determination": (
        "Right, I can do that too, just watch me.",
        "Okay, let us get this done, no more excuses.",
    ),
    "Empathic Pain": (
        "Oh no, that must really hurt, poor thing.",
        "Ouch, I feel so sorry for her, that looked painful.",
    ),
    "Excitement": (
        "Yes! Come on, come on, this is amazing!",
        "Oh wow, here it comes, I cannot wait!",
    ),
    "Joy": (
        "Oh that is lovely, it makes me so happy to see.",
        "Aw, that is wonderful, what a nice moment.",
    ),
}
assert tuple(REACTION_SENTENCES) == MIMICRY_NAMES


def reaction_line(intensities: np.ndarray, rng: np.random.Generator) -> str:
    """One line for a mimicry clip, matching its strongest of the 6 intensities ([6], `MIMICRY_NAMES`
    order)."""
    return str(rng.choice(REACTION_SENTENCES[MIMICRY_NAMES[int(np.argmax(intensities))]]))


def dominant_expression(expr: np.ndarray) -> str:
    """Most frequent labelled class other than Neutral; Neutral when no other class is labelled."""
    valid = expr[(expr > 0) & (expr < len(EXPR_CLASSES))]
    if not len(valid):
        return "Neutral"
    return EXPR_CLASSES[int(np.bincount(valid, minlength=len(EXPR_CLASSES)).argmax())]


def transcript_line(exprs: list[np.ndarray], rng: np.random.Generator) -> str:
    """One line; with two speakers their sentences follow each other ("A: ... B: ...")."""
    sentences: list[str] = []
    for e in exprs:
        options = [s for s in SENTENCES[dominant_expression(e)] if s not in sentences]
        sentences.append(str(rng.choice(options)))
    if len(sentences) == 1:
        return sentences[0]
    return " ".join(f"{chr(ord('A') + i)}: {s}" for i, s in enumerate(sentences))
