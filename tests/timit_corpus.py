"""A tiny TIMIT-format corpus from synthesized speech with real phone timings (a test helper, not a test).

espeak-ng (bundled by `espeakng-loader`, called through ctypes) reports every phoneme it speaks with its
sample position (22,050 Hz). We resample to 16 kHz, write the audio as NIST SPHERE 16-bit PCM, and the
phones as a TIMIT .PHN file through a table from espeak's phoneme names to TIMIT labels (stops become
closure + release, r-coloured vowels vowel + r, as TIMIT transcribes them). Deterministic: same voices,
same sentences, same seeded noise floor, so the same bytes every time.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import espeakng_loader
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

ESPEAK_RATE = 22_050
RATE = 16_000
UP, DOWN = RATE // gcd(RATE, ESPEAK_RATE), ESPEAK_RATE // gcd(RATE, ESPEAK_RATE)  # 320, 441

# espeak-ng en-us phoneme names (stress marks stripped) -> TIMIT labels; several labels share the
# espeak phone's duration equally.
TIMIT = {
    "i:": ("iy",), "i": ("iy",), "I": ("ih",), "I2": ("ix",), "I#": ("ix",), "e": ("eh",), "E": ("eh",),
    "a": ("ae",), "a#": ("ae",), "aa": ("ae",), "A:": ("aa",), "0": ("aa",), "O:": ("ao",), "O": ("ao",), "O2": ("aa",),
    "V": ("ah",), "@": ("ax",), "@2": ("ax",), "@5": ("ax",), "3": ("axr",), "3:": ("er",), "U": ("uh",),
    "u:": ("uw",), "eI": ("ey",), "aI": ("ay",), "aU": ("aw",), "OI": ("oy",), "oU": ("ow",), "@L": ("el",),
    "A@": ("aa", "r"), "O@": ("ao", "r"), "e@": ("eh", "r"), "i@": ("ih", "r"), "i@3": ("ih", "r"),
    "U@": ("uh", "r"), "aI@": ("ay", "er"), "aU@": ("aw", "er"), "aI3": ("ay", "er"), "o@": ("ao", "r"),
    "p": ("pcl", "p"), "b": ("bcl", "b"), "t": ("tcl", "t"), "d": ("dcl", "d"), "k": ("kcl", "k"),
    "g": ("gcl", "g"), "tS": ("tcl", "ch"), "dZ": ("dcl", "jh"), "t#": ("dx",), "d#": ("dx",),
    "f": ("f",), "v": ("v",), "T": ("th",), "D": ("dh",), "s": ("s",), "z": ("z",), "S": ("sh",),
    "Z": ("zh",), "h": ("hh",), "m": ("m",), "n": ("n",), "N": ("ng",), "n-": ("en",), "m-": ("em",),
    "l": ("l",), "l/": ("l",), "r": ("r",), "r-": ("r",), "w": ("w",), "j": ("y",), ";": ("y",), "?": ("q",),
    "_:": ("pau",), "_": ("pau",), "_!": ("pau",),
}

SA = ("She had your dark suit in greasy wash water all year.", "Don't ask me to carry an oily rag like that.")
SENTENCES = (
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
)


@dataclass(frozen=True)
class Speaker:
    split: str  # TRAIN | TEST
    region: str  # DR1..DR8
    name: str  # e.g. FCJF0: sex, initials, digit
    voice: str  # espeak voice
    rate: int  # words per minute
    pitch: int  # 0..100


# Real TIMIT speaker ids: train speakers, dev-set speakers, core-test speakers, and one test speaker
# that is in neither list (the reader must leave it out).
SPEAKERS = (
    Speaker("TRAIN", "DR1", "FCJF0", "en-us+f3", 165, 60), Speaker("TRAIN", "DR1", "MCPM0", "en-us", 175, 40),
    Speaker("TRAIN", "DR2", "FAEM0", "en-us+f2", 150, 70), Speaker("TRAIN", "DR2", "MARC0", "en-us+m3", 185, 30),
    Speaker("TRAIN", "DR3", "MDBB0", "en-us", 160, 50), Speaker("TRAIN", "DR4", "FALK0", "en-us+f4", 170, 65),
    Speaker("TEST", "DR1", "FAKS0", "en-us+f1", 160, 55), Speaker("TEST", "DR1", "MGWT0", "en-us+m2", 170, 35),
    Speaker("TEST", "DR1", "MDAB0", "en-us+m1", 165, 45), Speaker("TEST", "DR1", "FELC0", "en-us+f5", 155, 62),
    Speaker("TEST", "DR2", "MKCH0", "en-us", 180, 42),
)


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
SYNCHRONOUS, PHONEME_EVENTS, EVENT_END, EVENT_PHONEME, UTF8 = 2, 1, 0, 7, 1
RATE_PARAM, PITCH_PARAM = 1, 3


class Espeak:
    """espeak-ng in synchronous mode: `say(text)` -> (22,050 Hz int16 samples, [(sample, phoneme name)])."""

    def __init__(self):
        self.lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        rate = self.lib.espeak_Initialize(SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), PHONEME_EVENTS)
        assert rate == ESPEAK_RATE, rate
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._receive)  # kept on self: espeak holds only a raw pointer to it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _receive(self, wav, n, events) -> int:
        if wav and n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != EVENT_END:
            if events[i].type == EVENT_PHONEME:
                self.events.append((events[i].sample, events[i].id.string.decode()))
            i += 1
        return 0

    def say(self, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        assert self.lib.espeak_SetVoiceByName(voice.encode()) == 0, voice
        self.lib.espeak_SetParameter(RATE_PARAM, rate, 0)
        self.lib.espeak_SetParameter(PITCH_PARAM, pitch, 0)
        self.chunks, self.events = [], []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, UTF8, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self.chunks), self.events


def phones(events: list[tuple[int, str]], samples: int) -> list[tuple[int, int, str]]:
    """espeak's phoneme onsets (22,050 Hz) -> contiguous TIMIT segments (16 kHz) from 0 to `samples`,
    h# before the first phone and for the final pause."""
    onsets = [(round(s * UP / DOWN), name.lstrip("',")) for s, name in events]
    out: list[tuple[int, int, str]] = []
    for k, (begin, name) in enumerate(onsets):
        end = onsets[k + 1][0] if k + 1 < len(onsets) else samples
        if end <= begin:
            continue
        labels = TIMIT[name]
        cuts = [begin + (end - begin) * i // len(labels) for i in range(len(labels) + 1)]
        out += [(cuts[i], cuts[i + 1], lab) for i, lab in enumerate(labels)]
    out = [(0, out[0][0], "h#")] + out if out[0][0] > 0 else out
    while out[-1][2] == "pau":  # trailing pauses are the end silence
        out.pop()
    return out + [(out[-1][1], samples, "h#")]


def utterances(speaker: Speaker, index: int) -> list[tuple[str, str]]:
    """SA1, SA2 and three other sentences (two SX, one SI), chosen per speaker: [(utterance id, text)]."""
    pick = [SENTENCES[(index * 3 + k) % len(SENTENCES)] for k in range(3)]
    return [("SA1", SA[0]), ("SA2", SA[1]), (f"SX{100 + index}", pick[0]), (f"SX{200 + index}", pick[1]),
            (f"SI{1000 + index}", pick[2])]


def write(root: Path, speakers=SPEAKERS) -> dict[str, list[tuple[int, int, str]]]:
    """Write the corpus under `root` (TRAIN/ and TEST/); returns {path of .PHN: its segments}."""
    engine = Espeak()
    rng = np.random.default_rng(0)
    written = {}
    for index, spk in enumerate(speakers):
        folder = Path(root) / spk.split / spk.region / spk.name
        folder.mkdir(parents=True, exist_ok=True)
        for utt, text in utterances(spk, index):
            audio, events = engine.say(text, spk.voice, spk.rate, spk.pitch)
            # 20 ms of lead-in, then 16 kHz, then a low noise floor (real recordings have no digital silence).
            audio = np.concatenate([np.zeros(441), audio.astype(np.float64)])
            events = [(s + 441, name) for s, name in events]
            wave = resample_poly(audio, UP, DOWN)
            wave = wave + rng.normal(0, 8, len(wave))
            wave = np.clip(np.round(wave), -32768, 32767).astype(np.int16)
            segments = phones(events, len(wave))
            stem = folder / utt
            sf.write(f"{stem}.WAV", wave, RATE, format="NIST", subtype="PCM_16")
            (folder / f"{utt}.PHN").write_text("".join(f"{b} {e} {lab}\n" for b, e, lab in segments))
            (folder / f"{utt}.TXT").write_text(f"0 {len(wave)} {text}\n")
            words = text.rstrip(".").split()  # word timings are not known: spread evenly (tests ignore them)
            span = (segments[-1][0] - segments[0][1]) // len(words)
            (folder / f"{utt}.WRD").write_text("".join(
                f"{segments[0][1] + i * span} {segments[0][1] + (i + 1) * span} {w.lower()}\n"
                for i, w in enumerate(words)))
            written[str(folder / f"{utt}.PHN")] = segments
    return written
