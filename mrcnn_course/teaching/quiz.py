"""Multiple-choice quizzes: check an answer without showing the right one, explain it once it is right.

Each question of a quiz notebook has an answer cell (`q1 = None`, set to "A", "B", "C" or "D") and a
check cell below it:

    from mrcnn_course.teaching import quiz  # again: the cell also runs before the setup cell
    q1_key = quiz.key("C", "The RPN scores every anchor ...")   # the quiz's source, in solutions/
    q1_key = "quiz1.5f0c...."                                   # what the released quiz holds
    quiz.check("q1", q1, q1_key)        # a learner's immediate feedback, and the explanation once right
    ### BEGIN HIDDEN TESTS
    assert quiz.is_right(q1, q1_key), "q1 is not the right answer"   # what nbgrader grades
    ### END HIDDEN TESTS

A key is one string made from the right letter and the explanation: a salted hash of the letter,
and the explanation encrypted with a keystream that only the right letter gives. When nbgrader
releases a quiz, nbgrader_steps.SealQuizKeys replaces each `quiz.key(...)` call by the string it returns,
so neither the letter nor the explanation is in the released notebook or in nbgrader's feedback.

What it protects against: reading the answer by accident, in the notebook or in the feedback of a
classmate. What it does not: with four options, anyone can try them all. It is a study aid.

In a notebook, a check run before its answer cell says which cell to run, and an answer that is not a
letter fails with its message alone, never with the cell's source and its sealed key
(notebook_errors.py).
"""

import base64
import hashlib
import textwrap

from mrcnn_course.teaching.notebook_errors import WIDTH, AnswerMissing, install

install()

LETTERS = ("A", "B", "C", "D")
KEY_VERSION = "quiz1"


def _hash(*parts: str) -> bytes:
    return hashlib.sha256(":".join(parts).encode("utf-8")).digest()


def _keystream(salt: str, letter: str, length: int) -> bytes:
    """SHA-256 in counter mode, seeded by the salt and the letter (and not derivable from the digest)."""
    blocks = (_hash(salt, "explanation", letter, str(i)) for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream))


def key(answer: str, explanation: str) -> str:
    """The key of a question whose right answer is `answer` ("A" to "D").

    Deterministic (the salt comes from the explanation), so releasing a quiz twice gives the same
    notebook byte for byte.
    """
    if answer not in LETTERS:
        raise ValueError(f"the right answer must be one of {', '.join(LETTERS)}, got {answer!r}")
    if not explanation.strip():
        raise ValueError("write an explanation: the learner reads it once the answer is right")
    salt = hashlib.sha256(explanation.encode("utf-8")).hexdigest()[:12]
    digest = _hash(salt, "answer", answer).hex()[:16]
    plain = explanation.encode("utf-8")
    sealed = base64.urlsafe_b64encode(_xor(plain, _keystream(salt, answer, len(plain)))).decode("ascii")
    return f"{KEY_VERSION}.{salt}.{digest}.{sealed}"


def _parse(question_key: str) -> tuple[str, str, bytes]:
    try:
        version, salt, digest, sealed = question_key.split(".")
        if version != KEY_VERSION:
            raise ValueError
        return salt, digest, base64.urlsafe_b64decode(sealed)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"not a quiz key: {question_key!r:.40}; keys come from quiz.key(answer, explanation)"
        ) from error


def _letter(answer) -> str | None:
    """ "c" or " C " -> "C"; anything that is not one of the letters -> None."""
    if not isinstance(answer, str):
        return None
    letter = answer.strip().upper()
    return letter if letter in LETTERS else None


def is_right(answer, question_key: str) -> bool:
    """Whether `answer` (a letter, any case) is the right one for this key."""
    salt, digest, _ = _parse(question_key)
    letter = _letter(answer)
    return letter is not None and _hash(salt, "answer", letter).hex()[:16] == digest


def explanation(answer, question_key: str) -> str | None:
    """The question's explanation if `answer` is right, else None."""
    if not is_right(answer, question_key):
        return None
    salt, _, sealed = _parse(question_key)
    letter = _letter(answer)
    assert letter is not None  # is_right accepted it
    return _xor(sealed, _keystream(salt, letter, len(sealed))).decode("utf-8")


def check(name: str, answer, question_key: str) -> None:
    """A question's check cell: a format check, then right or not, and the explanation once right.

    Raises AnswerMissing (an AssertionError) only when `answer` is not a letter (still None, a number,
    "E"...): that is the visible format check. A wrong letter prints "not the right answer" without saying which is;
    the graded check (quiz.is_right) sits in the hidden tests.
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
        print(
            f'✗ {name} = "{letter}" is not the right answer. Read the question again, change {name},\n'
            "and run both cells: the explanation opens when the answer is right."
        )
    else:
        print(f'✓ {name} = "{letter}" is right.\n')
        print(textwrap.fill(why, width=100))
