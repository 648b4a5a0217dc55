"""What the synthetic writers of the embedded data set write, and the synthetic speakers say: a small English
vocabulary and a tiny phrase grammar. 1-3 words a line keep the sequences short (hershey.py, speech_demo.py)."""

import numpy as np

WORDS = {
    "det": "the a my our his her this that each some no one two".split(),
    "adj": """red old new big small good long short warm cold dark quiet loud happy sad tall young
              soft fast slow wild calm clean fresh green blue brown grey early late rich poor kind
              brave proud little sweet bright deep open round plain fair wise""".split(),
    "noun": """cat dog fox bird fish tree leaf road rain snow wind sun moon star sea lake hill farm
               town city house door room book page pen ink word line note song bell boat ship car
               train horse cow sheep goat bread milk tea cake apple plum corn seed field river
               stone wall gate garden window table chair bed lamp clock friend child woman man king
               queen girl boy mother father sister brother baker letter paper music water summer
               winter morning evening night day story game bridge market island""".split(),
    "verb": """runs walks sings reads writes jumps sleeps waits rests falls grows shines flies swims
               calls looks plays works smiles laughs sails dances rides turns hides""".split(),
    "adv": "slowly here there now today again soon often still well away home later".split(),
    "prep": "in on by at near over under with from to for into".split(),
}
PHRASES = [  # (pattern, weight)
    ("noun", 2),
    ("adj", 1),
    ("verb", 1),
    ("det noun", 3),
    ("adj noun", 3),
    ("noun verb", 2),
    ("verb adv", 1),
    ("prep noun", 1),
    ("det adj noun", 2),
    ("det noun verb", 2),
    ("noun verb adv", 1),
    ("prep det noun", 2),
    ("adj noun verb", 1),
]


CHARACTERS = " " + "".join(sorted({c for words in WORDS.values() for w in words for c in w + w.upper()}))
LETTERS = (5, 14)  # letters a line may have: about 60-160 points a line


def random_text(rng):
    """A short English phrase such as "the old farm" or "Birds sing", as a list of words."""
    weights = np.array([w for _, w in PHRASES], dtype=np.float64)
    while True:
        pattern = PHRASES[rng.choice(len(PHRASES), p=weights / weights.sum())][0]
        words = [WORDS[part][rng.integers(len(WORDS[part]))] for part in pattern.split()]
        if LETTERS[0] <= sum(len(w) for w in words) <= LETTERS[1]:
            break
    if rng.random() < 0.15:
        words[0] = words[0].capitalize()
    return words
