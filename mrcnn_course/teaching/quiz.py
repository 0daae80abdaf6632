"""Multiple-choice quizzes: check an answer without showing the right one, say why a wrong one is
wrong, and explain the right one once it is chosen.

Each question of a quiz notebook has an answer cell (`q1 = None`, set to "A", "B", "C" or "D") and a
check cell below it:

    from mrcnn_course.teaching import quiz  # again: the cell also runs before the setup cell
    q1_key = quiz.key("C", "The RPN scores every anchor ...", wrong={   # the quiz's source, in solutions/
        "A": "Colour comes from the image itself ...", "B": "...", "D": "...",
    })
    q1_key = "quiz2.5f0c...."                                   # what the released quiz holds
    quiz.check("q1", q1, q1_key)        # a learner's immediate feedback: why a wrong letter is wrong,
                                        # the explanation once right
    ### BEGIN HIDDEN TESTS
    assert quiz.is_right(q1, q1_key), "q1 is not the right answer"   # what nbgrader grades
    ### END HIDDEN TESTS

A key is one string made from the right letter, the explanation and the feedback of each wrong
letter: a salted hash of the right letter, and one text per letter (the explanation for the right
one, the feedback for the others), each encrypted with a keystream that only its own letter gives and
padded to the same length, so that the texts' lengths do not point at the explanation. When nbgrader
releases a quiz, nbgrader_steps.SealQuizKeys replaces each `quiz.key(...)` call by the string it
returns, so neither the letter nor any text is in the released notebook or in nbgrader's feedback.
A wrong letter's feedback says why that option is wrong and never names the right letter (key()
refuses feedback that quotes a letter).

What it protects against: reading the answer by accident, in the notebook or in the feedback of a
classmate. What it does not: with four options, anyone can try them all. It is a study aid.

In a notebook, a check run before its answer cell says which cell to run, and an answer that is not a
letter fails with its message alone, never with the cell's source and its sealed key
(notebook_errors.py).
"""

import base64
import hashlib
import re
import textwrap

from mrcnn_course.teaching.notebook_errors import WIDTH, AnswerMissing, install

install()

LETTERS = ("A", "B", "C", "D")
KEY_VERSION = "quiz2"
# Feedback that names a letter ("option C", "(C)", '"C"', "**C.**") could give the right one away.
NAMES_A_LETTER = re.compile(r'\b(?:option|answer|letter|choice)s?\s+[A-D]\b|\([A-D]\)|"[A-D]"|\*\*[A-D]\.\*\*')


def _hash(*parts: str) -> bytes:
    return hashlib.sha256(":".join(parts).encode("utf-8")).digest()


def _keystream(salt: str, letter: str, length: int) -> bytes:
    """SHA-256 in counter mode, seeded by the salt and the letter (and not derivable from the digest)."""
    blocks = (_hash(salt, "explanation", letter, str(i)) for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream))


def key(answer: str, explanation: str, wrong: dict[str, str]) -> str:
    """The key of a question whose right answer is `answer` ("A" to "D").

    explanation  why `answer` is right: the learner reads it once they choose it
    wrong        {letter: why that option is wrong} for each of the three other letters: the learner
                 reads it when they choose that letter, so it must not name the right letter

    Deterministic (the salt comes from the texts), so releasing a quiz twice gives the same notebook
    byte for byte.
    """
    if answer not in LETTERS:
        raise ValueError(f"the right answer must be one of {', '.join(LETTERS)}, got {answer!r}")
    if not explanation.strip():
        raise ValueError("write an explanation: the learner reads it once the answer is right")
    others = [letter for letter in LETTERS if letter != answer]
    if not isinstance(wrong, dict) or sorted(wrong) != others:
        got = sorted(wrong) if isinstance(wrong, dict) else type(wrong).__name__
        raise ValueError(f"wrong= needs the feedback of each wrong letter, {', '.join(others)}; got {got}")
    for letter, text in wrong.items():
        if not text.strip():
            raise ValueError(f"write the feedback of {letter}: why that option is wrong")
        if pointer := NAMES_A_LETTER.search(text):
            raise ValueError(
                f"the feedback of {letter} names a letter ({pointer.group()!r}): say why "
                "the option is wrong without pointing at another option's letter"
            )
    texts = {answer: explanation, **wrong}
    plain = {letter: texts[letter].encode("utf-8") for letter in LETTERS}
    width = max(len(text) for text in plain.values())
    salt = hashlib.sha256("\0".join(texts[letter] for letter in LETTERS).encode("utf-8")).hexdigest()[:12]
    digest = _hash(salt, "answer", answer).hex()[:16]
    sealed = [
        base64.urlsafe_b64encode(_xor(plain[letter].ljust(width, b"\0"), _keystream(salt, letter, width)))
        for letter in LETTERS  # the same length each: the longest text is not the explanation's tell
    ]
    return ".".join([KEY_VERSION, salt, digest, *(text.decode("ascii") for text in sealed)])


def _parse(question_key: str) -> tuple[str, str, dict[str, bytes]]:
    try:
        version, salt, digest, *sealed = question_key.split(".")
        if version != KEY_VERSION or len(sealed) != len(LETTERS):
            raise ValueError
        return salt, digest, {letter: base64.urlsafe_b64decode(text) for letter, text in zip(LETTERS, sealed)}
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"not a quiz key: {question_key!r:.40}; keys come from quiz.key(answer, explanation, wrong)"
        ) from error


def _letter(answer) -> str | None:
    """ "c" or " C " -> "C"; anything that is not one of the letters -> None."""
    if not isinstance(answer, str):
        return None
    letter = answer.strip().upper()
    return letter if letter in LETTERS else None


def _open(letter: str, question_key: str) -> str:
    salt, _, sealed = _parse(question_key)
    text = sealed[letter]
    return _xor(text, _keystream(salt, letter, len(text))).rstrip(b"\0").decode("utf-8")


def is_right(answer, question_key: str) -> bool:
    """Whether `answer` (a letter, any case) is the right one for this key."""
    salt, digest, _ = _parse(question_key)
    letter = _letter(answer)
    return letter is not None and _hash(salt, "answer", letter).hex()[:16] == digest


def explanation(answer, question_key: str) -> str | None:
    """The question's explanation if `answer` is right, else None."""
    letter = _letter(answer)
    if letter is None or not is_right(letter, question_key):
        return None
    return _open(letter, question_key)


def why_wrong(answer, question_key: str) -> str | None:
    """Why the option `answer` is wrong, if it is a wrong letter; None for the right one or a non-letter."""
    letter = _letter(answer)
    if letter is None or is_right(letter, question_key):
        return None
    return _open(letter, question_key)


def check(name: str, answer, question_key: str) -> None:
    """A question's check cell: a format check, then right or not, with why.

    Raises AnswerMissing (an AssertionError) only when `answer` is not a letter (still None, a number,
    "E"...): that is the visible format check. A wrong letter prints why that option is wrong, without
    saying which one is right; the graded check (quiz.is_right) sits in the hidden tests.
    """
    letter = _letter(answer)
    if letter is None:
        if answer is None:
            problem = f"{name} is still None"
        else:
            problem = f"{name} is {answer!r} ({type(answer).__name__})"
        message = (
            f'{problem}: set {name} = "A", "B", "C" or "D" (one letter, in quotes) in the cell above, '
            "run that cell, then run this one."
        )
        lines = textwrap.wrap(message, WIDTH, initial_indent=" " * len("AnswerMissing: "), subsequent_indent="  ")
        raise AnswerMissing("\n".join([lines[0].lstrip(), *lines[1:]]))
    why = explanation(letter, question_key)
    if why is None:
        print(f'✗ {name} = "{letter}" is not the right answer.\n')
        print(textwrap.fill(_open(letter, question_key), width=100))
        print(f"\nChange {name} and run both cells: the explanation opens when the answer is right.")
    else:
        print(f'✓ {name} = "{letter}" is right.\n')
        print(textwrap.fill(why, width=100))
