"""Fixed word pools of the synthetic world: values, name parts, question phrasings, filler.

Every pool here is constant; the seeded generator draws from them. Filler text never contains a
colour, a city, a digit or an entity name, so the only value a generated response asserts is the
one in its answer sentence.
"""

from __future__ import annotations

KINDS = ("colour", "city", "legs", "arithmetic")

BASE_COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "white", "black", "grey", "silver")
# Bases that take a shade modifier ("dark green"); the achromatic ones stay single words.
SHADED_BASES = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown")
SHADES = ("dark", "light", "pale", "bright")
SHADED_COLOURS = tuple(f"{shade} {base}" for shade in SHADES for base in SHADED_BASES)
COLOURS = BASE_COLOURS + SHADED_COLOURS

ARITHMETIC_OPERATORS = ("plus", "minus", "times")

# Entity names are two or three syllables from these parts ("zorblat", "quimmex").
NAME_ONSETS = ("b", "bl", "br", "d", "dr", "f", "fl", "g", "gl", "gr", "k", "kr", "m", "n", "p", "pl", "qu", "s", "sk", "sn", "t", "tr", "v", "w", "z")
NAME_VOWELS = ("a", "e", "i", "o", "u", "oo", "ee", "ai")
NAME_CODAS = ("", "", "", "", "b", "k", "l", "m", "n", "p", "r", "t", "x", "rk", "sh", "nk", "lt")

# City names wrap a capitalised root in one of these forms ("Vrellmoor", "Port Zandor").
CITY_ROOT_ONSETS = ("V", "Z", "Qu", "Th", "Kr", "Br", "Gl", "D", "M", "Sk", "T", "H", "Wr", "Pr")
CITY_ROOT_VOWELS = ("a", "e", "i", "o", "u", "y", "ae", "ou")
CITY_ROOT_CODAS = ("ll", "nd", "rn", "sk", "th", "rr", "mb", "lv", "x", "st")
CITY_FORMS = ("{root}moor", "{root}ford", "{root}holm", "{root}wick", "Port {root}", "{root} Falls", "Upper {root}", "New {root}")

# Ways to ask each kind of question. {name}: entity name; {a} {op} {b}: arithmetic operands.
QUESTION_PHRASINGS = {
    "colour": ("What colour is the {name}?", "Which colour is the {name}?", "Tell me the colour of the {name}."),
    "city": ("Where does the {name} live?", "In which city does the {name} live?", "What is the home city of the {name}?"),
    "legs": ("How many legs does the {name} have?", "What is the number of legs of the {name}?", "Tell me how many legs the {name} has."),
    "arithmetic": ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "How much is {a} {op} {b}?"),
}

# Sentences that state a value {value}. Templates naming the subject open fact documents; the
# pronoun ones only follow a sentence that named it. {legs_noun} is "leg" or "legs".
NAMED_ANSWERS = {
    "colour": ("The {name} is {value}.", "The colour of the {name} is {value}.", "The {name} has a {value} colour."),
    "city": ("The {name} lives in {value}.", "The home city of the {name} is {value}.", "The {name} is from {value}."),
    "legs": ("The {name} has {value} {legs_noun}.", "The number of legs of the {name} is {value}."),
    "arithmetic": ("{a} {op} {b} is {value}.", "{a} {op} {b} equals {value}."),
}
PRONOUN_ANSWERS = {
    "colour": ("It is {value}.", "Its colour is {value}."),
    "city": ("It lives in {value}.", "Its home city is {value}."),
    "legs": ("It has {value} {legs_noun}.",),
    "arithmetic": ("The answer is {value}.", "That makes {value}.", "The result is {value}."),
}

GREETINGS = (
    "Sure!", "Of course.", "Good question.", "Great question!", "Happy to help.", "Let me think about that.",
    "Hello!", "Thanks for asking.", "Alright.", "Okay, here is what I know.",
)
HEDGES = ("I believe", "I think", "As far as I know,", "If I remember correctly,", "From what I recall,", "To my knowledge,")
ASIDES = (
    "That is a well known fact.", "Many people ask about this.", "It is easy to remember.", "I am fairly confident about this.",
    "You can check it in any almanac.", "This comes up quite often.",
)
CLOSINGS = (
    "Hope this helps.", "Let me know if you have other questions.", "Have a nice day!", "Feel free to ask more.",
    "Is there anything else?", "Glad I could help.",
)
