"""Unit tests of worker.py's pure parts (the protocol end to end is tested from Rust)."""

import base64
import io
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import worker  # noqa: E402

try:
    import pandas  # noqa: F401

    HAVE_PANDAS = True
except ImportError:
    HAVE_PANDAS = False


class RunCellTest(unittest.TestCase):
    def test_last_expression_is_the_value(self):
        ns = {}
        self.assertEqual(worker.run_cell("a = 2\na * 21", ns, "<cell-1>"), 42)
        self.assertEqual(ns["a"], 2)

    def test_statement_last_gives_none(self):
        self.assertIsNone(worker.run_cell("b = 1", {}, "<cell-1>"))

    def test_trailing_semicolon_hides_the_value(self):
        self.assertIsNone(worker.run_cell("1 + 1;", {}, "<cell-1>"))

    def test_syntax_error_has_no_frames(self):
        with self.assertRaises(SyntaxError) as caught:
            worker.run_cell("def f(:", {}, "<cell-9>")
        info = worker.error_info(caught.exception)
        self.assertEqual(info["ename"], "SyntaxError")
        self.assertEqual(info["traceback"][0], '  File "<cell-9>", line 1')

    def test_traceback_starts_at_the_cell(self):
        try:
            worker.run_cell("x = 1\n1 / 0", {}, "<cell-3>")
        except ZeroDivisionError as exc:
            info = worker.error_info(exc)
        self.assertEqual(info["traceback"][0], "Traceback (most recent call last):")
        self.assertEqual(info["traceback"][1], '  File "<cell-3>", line 2, in <module>')
        self.assertFalse(any("worker.py" in line for line in info["traceback"]))

    def test_a_cell_run_again_is_named_by_its_new_count(self):
        # The second run reuses the first one's compilation: every frame, the nested
        # function's too, must still name the cell it ran as.
        code = "def f():\n    return 1 / 0\nf()"
        for count in (1, 2):
            try:
                worker.run_cell(code, {}, f"<cell-{count}>")
            except ZeroDivisionError as exc:
                info = worker.error_info(exc)
            self.assertEqual(info["traceback"][1], f'  File "<cell-{count}>", line 3, in <module>')
            self.assertEqual(info["traceback"][3], f'  File "<cell-{count}>", line 2, in f')

    def test_a_cell_run_again_starts_from_a_fresh_namespace(self):
        first, second = {}, {}
        self.assertEqual(worker.run_cell("n = 40\nn + 2", first, "<cell-1>"), 42)
        self.assertEqual(worker.run_cell("n = 40\nn + 2", second, "<cell-2>"), 42)
        self.assertEqual(second["n"], 40)


class ErrorCategoryTest(unittest.TestCase):
    def category_of(self, code):
        try:
            worker.run_cell(code, {}, "<cell-1>")
        except BaseException as exc:  # noqa: B036 - as the worker catches them
            return worker.error_category(exc)
        self.fail(f"{code!r} raised nothing")

    def test_only_a_cell_that_does_not_parse_is_syntax(self):
        for code in ["x = (", "if 1:\npass", "if 1:\n\tx = 1\n        y = 2", "a\0b"]:
            self.assertEqual(self.category_of(code), "syntax", code)
        self.assertEqual(self.category_of("exec('x = (')"), "runtime")
        self.assertEqual(self.category_of("1 / 0"), "runtime")
        # Only the server knows whether it sent the interrupt.
        self.assertEqual(self.category_of("raise KeyboardInterrupt"), "runtime")

    def test_limits_are_named(self):
        self.assertEqual(self.category_of("raise MemoryError"), "memory")
        self.assertEqual(worker.error_category(worker.CPUTimeLimitExceeded("x")), "cpu_limit")
        self.assertEqual(worker.error_category(worker.OutputLimitExceeded("x")), "output_limit")
        for errno_name in ["ENOSPC", "EDQUOT", "EFBIG"]:
            code = f"import errno, os\nraise OSError(errno.{errno_name}, os.strerror(errno.{errno_name}))"
            self.assertEqual(self.category_of(code), "disk_quota", errno_name)
        self.assertEqual(self.category_of("open('/nonexistent/x')"), "runtime")

    def test_a_bundle_surely_fits_only_when_its_worst_case_does(self):
        self.assertTrue(worker.surely_fits({"text/plain": "x" * 100}, 2048))
        self.assertFalse(worker.surely_fits({"text/plain": "x" * 1000}, 2048))
        self.assertFalse(worker.surely_fits({"application/json": {"a": 1}}, 1 << 20))


class ErrorInfoTest(unittest.TestCase):
    def test_a_deep_stack_is_cut_in_the_middle(self):
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(5000)
        try:
            worker.run_cell("def f(n):\n    return f(n + 1)\nf(0)", {}, "<cell-1>")
        except RecursionError as exc:  # assertRaises would drop the traceback
            error = exc
        finally:
            sys.setrecursionlimit(limit)
        frames = 0
        tb = error.__traceback__
        while tb is not None:
            frames += 1
            tb = tb.tb_next
        lines = worker.error_info(error)["traceback"]
        shown = worker.TRACEBACK_HEAD_FRAMES + worker.TRACEBACK_TAIL_FRAMES
        # This test's frame and run_cell's are not shown: the traceback starts at the cell.
        self.assertIn(f"  [... {frames - 2 - shown} frames omitted ...]", lines)
        self.assertLess(len(lines), 40, lines)
        self.assertEqual(lines[-1], "RecursionError: maximum recursion depth exceeded")

    def test_a_huge_message_is_capped(self):
        info = worker.error_info(ValueError("x" * (1 << 20)))
        self.assertLessEqual(sum(len(line) for line in info["traceback"]), worker.TRACEBACK_CHARS + 100)
        self.assertLessEqual(len(info["evalue"]), worker.EVALUE_CHARS + 1)

    def test_an_interrupt_cuts_the_formatting_short(self):
        class Slow(Exception):
            def __str__(self):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the interrupt ends this at once, or the test fails
                return "slow"

        previous = signal.signal(signal.SIGINT, worker.UserCode.on_sigint)
        try:
            started = time.monotonic()
            info = worker.error_info(Slow())
        finally:
            signal.signal(signal.SIGINT, previous)
        self.assertLess(time.monotonic() - started, 4)
        self.assertEqual(info["ename"], "Slow")
        self.assertEqual(info["traceback"][-1], "[... the traceback was cut short by an interrupt ...]")
        self.assertFalse(worker.UserCode.formatting)


class MimeBundleTest(unittest.TestCase):
    def test_plain_value(self):
        self.assertEqual(worker.mime_bundle(3), {"text/plain": "3"})

    def test_rich_reprs(self):
        class Rich:
            def __repr__(self):
                return "Rich()"

            def _repr_html_(self):
                return "<b>rich</b>"

            def _repr_png_(self):
                return b"\x89PNG"

            def _repr_markdown_(self):
                return None  # declined: left out

        bundle = worker.mime_bundle(Rich())
        self.assertEqual(
            bundle, {"text/plain": "Rich()", "text/html": "<b>rich</b>", "image/png": "iVBORw=="}
        )

    def test_classes_are_not_asked_for_reprs(self):
        class Rich:
            def _repr_html_(self):
                return "<b>instance</b>"

        self.assertEqual(list(worker.mime_bundle(Rich)), ["text/plain"])


class SinkTest(unittest.TestCase):
    def test_cap_cuts_and_flags(self):
        sink = worker.Sink(5)
        sink.feed("stdout", b"abc")
        sink.feed("stderr", b"defgh")
        sink.feed("stdout", b"ij")
        self.assertEqual(sink.finish(), ("abc", "de"))
        self.assertTrue(sink.truncated)

    def test_multibyte_character_split_across_reads(self):
        sink = worker.Sink(100)
        data = "é".encode()
        sink.feed("stdout", data[:1])
        sink.feed("stdout", data[1:])
        self.assertEqual(sink.finish(), ("é", ""))
        self.assertFalse(sink.truncated)

    def test_streaming_sends_pending_text(self):
        sent = []
        sink = worker.Sink(100, stream_to=lambda name, text: sent.append((name, text)))
        sink.feed("stdout", b"a\n")
        self.assertIsNotNone(sink.flush_due_in())
        sink.flush()
        self.assertEqual(sent, [("stdout", "a\n")])
        self.assertIsNone(sink.flush_due_in())
        self.assertEqual(sink.finish(), ("", ""))


class ImportSpecTest(unittest.TestCase):
    def test_base_namespace_binds_aliases(self):
        base = worker.build_base_namespace(["os.path as osp", "json"])
        self.assertIs(base["osp"], os.path)
        self.assertIn("json", base)
        self.assertEqual(base["__name__"], "__main__")


class ProbeTest(unittest.TestCase):
    """The probe the server runs at start: every mechanism answered, nothing left behind."""

    def probe(self, **isolation):
        import json
        import subprocess

        settings = json.dumps({"probe": dict({"user_namespace": os.geteuid() != 0}, **isolation)})
        out = subprocess.run(
            [sys.executable, "-I", worker.WORKER_FILE, settings], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        return json.loads(out.stdout.splitlines()[-1])

    def test_every_mechanism_is_answered(self):
        answers = self.probe()
        self.assertEqual(set(answers), {"user_namespace", "network", "mount", "pid"})
        for name, answer in answers.items():
            self.assertTrue(answer is None or isinstance(answer, str), (name, answer))

    def test_a_view_that_lacks_a_needed_path_is_refused(self):
        view = {"binds": [], "symlinks": [], "dirs": [["/tmp", 0o1777]], "files": [], "sessions": "/nonexistent", "cwd": "/"}
        answers = self.probe(view=view, must_see=[os.path.dirname(worker.WORKER_FILE)])
        if answers["mount"] is not None:
            self.skipTest(f"no mount namespace here: {answers['mount']}")
        self.assertIn("is not visible in the view", answers["view"])


class ParentPidTest(unittest.TestCase):
    def test_outside_a_pid_namespace_it_is_getppid(self):
        self.assertEqual(worker.parent_pid(), os.getppid())


class JsonTextTest(unittest.TestCase):
    def test_made_json_goes_into_a_frame_as_it_is(self):
        protocol = worker.Protocol(0, 1, 1 << 20)
        made = worker.JsonText('{"a":[1,2.5,null]}')
        frame = protocol.encode({"data": {"x": made, "y": made}, "s": "\x00tail"})
        self.assertEqual(
            json.loads(frame),
            {"data": {"x": {"a": [1, 2.5, None]}, "y": {"a": [1, 2.5, None]}}, "s": "\x00tail"},
        )

    def test_a_string_like_a_marker_is_left_alone(self):
        protocol = worker.Protocol(0, 1, 1 << 20)
        lookalike = f"\x00{worker.JSON_TEXT_NONCE[:-1]}x:0\x00"
        frame = protocol.encode({"s": lookalike, "t": worker.JsonText("1")})
        self.assertEqual(json.loads(frame), {"s": lookalike, "t": 1})

    def test_its_size_is_known_without_encoding(self):
        self.assertTrue(worker.surely_fits({"text/plain": "x", "a/b+json": worker.JsonText("[" * 100)}, 2048))
        self.assertFalse(worker.surely_fits({"text/plain": "x", "a/b+json": worker.JsonText("[" * 2000)}, 2048))


@unittest.skipUnless(HAVE_PANDAS, "pandas is not installed")
class TableResourceTest(unittest.TestCase):
    def setUp(self):
        worker.RichData.enabled, worker.RichData.max_rows = True, 3
        worker.RichData.max_bytes = 1 << 20

    def tearDown(self):
        worker.RichData.enabled, worker.RichData.max_rows = False, 1000

    def test_a_frame_is_pandas_table_cut_to_max_rows(self):
        import pandas

        frame = pandas.DataFrame({"a": range(5), "b": list("vwxyz")})
        bundle = worker.mime_bundle(frame)
        table = json.loads(bundle[worker.TABLE_MIME].text)
        expected = json.loads(frame.head(3).to_json(orient="table"))
        self.assertEqual(table, dict(expected, truncated=True, total_rows=5))
        self.assertIn("text/html", bundle)

    def test_a_table_over_max_bytes_has_fewer_rows(self):
        import pandas

        worker.RichData.max_bytes = 300
        table = json.loads(worker.table_resource(pandas.Series(["x" * 50] * 3)).text)
        self.assertLess(len(table["data"]), 3)
        self.assertTrue(table["truncated"])

    def test_without_data_there_is_no_table(self):
        import pandas

        worker.RichData.enabled = False
        self.assertNotIn(worker.TABLE_MIME, worker.mime_bundle(pandas.Series([1])))

    def test_what_pandas_cannot_make_a_table_of_has_none(self):
        import pandas

        frame = pandas.DataFrame([[1]], columns=pandas.MultiIndex.from_tuples([("a", "b")]))
        self.assertNotIn(worker.TABLE_MIME, worker.mime_bundle(frame))

    def test_objects_that_only_claim_to_be_frames_have_no_table_and_keep_their_value(self):
        import unittest.mock

        import pandas

        class Claims:
            __class__ = pandas.DataFrame  # isinstance() believes it

            def __repr__(self):
                return "claims"

        class OwnJson(pandas.DataFrame):
            def to_json(self, *args, **kwargs):
                return '{"a": ] }'

        class NoHead(pandas.DataFrame):
            def head(self, n=5):
                raise RuntimeError("no head")

        mock = unittest.mock.MagicMock(spec=pandas.DataFrame)
        self.assertNotIn(worker.TABLE_MIME, worker.mime_bundle(mock))
        for obj in (Claims(), OwnJson({"a": [1]}), NoHead({"a": range(5)})):
            with self.subTest(type(obj).__name__):
                bundle = worker.mime_bundle(obj)
                self.assertNotIn(worker.TABLE_MIME, bundle)
                self.assertIn("text/plain", bundle)
                json.loads(worker.Protocol(0, 1, 1 << 20).encode({"result": bundle}))

    def test_many_tables_fill_their_frame_in_one_pass_and_a_written_marker_stays_a_string(self):
        import pandas

        table = worker.table_resource(pandas.Series([1, 2]))
        forged = f"\x00{worker.JSON_TEXT_NONCE}:99999\x00"
        message = {"display": [{"t": table} for _ in range(2000)], "s": forged}
        frame = json.loads(worker.Protocol(0, 1, 1 << 26).encode(message))
        self.assertEqual(frame["s"], forged)
        self.assertEqual(frame["display"][1999]["t"]["total_rows"], 2)


def table_corpus():
    """(what, object) pairs of the shapes quick_table_json takes, with the values whose text is
    easiest to get wrong."""
    import numpy
    import pandas

    rng = numpy.random.default_rng(21)
    edges = [
        0.0, -0.0, 1.0, -1.5, 0.5, 2.5, 0.1 + 0.2, 1 / 3, 2 / 3, 1e-300, 1e300, -1e300, 5e-324,
        2.2250738585072014e-308, 1.7976931348623157e308, 1e-15, 1e-16, 9.9999999999e-16, 1e15,
        1e15 + 0.3, 1e16 - 1, 1e16, 1e17, 123456789.123456789, 0.99999999995, 0.00000000005,
        9.99999999995e-6, 4.35, 1.00000000005, 2**53, 2**63, 2**64, float("nan"), float("inf"),
        float("-inf"),
    ]
    # Every kind of double: random bit patterns (subnormals, NaN payloads, all exponents), and
    # decimals of every scale, where the rounding at ten decimals shows.
    bits = rng.integers(0, 2**64, 20_000, dtype=numpy.uint64, endpoint=False).view(numpy.float64)
    scaled = rng.random(20_000) * 10.0 ** rng.integers(-20, 21, 20_000)
    floats = numpy.concatenate([numpy.array(edges, dtype="float64"), bits, scaled, -scaled, scaled.round(3)])
    ints = [0, 1, -1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63)]
    ints += rng.integers(-(2**63), 2**63 - 1, 1000).tolist()
    strings = [
        "", "plain", 'say "hi"', "back\\slash", "a/b", "</script>", "<&>", "tab\there",
        "line\nbreak\r\n", "\x00nul", "\x01\x08\x0b\x0c\x1b\x1f", "é", "naïve café", "中文",
        "emoji 😀 and 🏳️‍🌈", "\u2028\u2029", "\ufeff", "\uffff", "%s %d %% {}", '"},{"', "\\u0041",
        "\\\\u007f", "x" * 10_000,
    ]
    # Every code point but DEL and the surrogates, a stretch per string.
    code_points = [c for c in range(0x110000) if c != 0x7F and not 0xD800 <= c <= 0xDFFF]
    every_char = ["".join(map(chr, code_points[i : i + 4096])) for i in range(0, len(code_points), 4096)]
    groups = pandas.DataFrame({"k": rng.integers(0, 100, 10_000), "v": rng.random(10_000)})
    mixed = {
        "f": floats[:1000],
        "i": ints[:1000],
        "b": rng.random(1000) > 0.5,
        "s": (strings * 50)[:1000],
        "o": pandas.Series((strings * 50)[:1000], dtype=object),
    }
    odd_names = ['q"uote', "back\\slash", "a/b", "é😀", "%s%%", "tab\t", "\x01", " "]
    python_str = pandas.StringDtype("python", na_value=numpy.nan)

    return [
        ("floats", pandas.Series(floats)),
        ("named floats, named index", pandas.Series(floats[:100], name="v", index=pandas.RangeIndex(100, name="k"))),
        ("a groupby's result", groups.groupby("k")["v"].mean()),
        ("ints", pandas.Series(ints, dtype="int64", name="i")),
        ("bools", pandas.Series([True, False, True], name="b")),
        ("strings", pandas.Series(strings, name="s")),
        ("every character", pandas.Series(every_char)),
        ("strings with missing", pandas.Series(["a", None, "c", float("nan")])),
        ("object strings", pandas.Series(strings, dtype=object)),
        ("object strings, None and NaN", pandas.Series(["a", None, float("nan"), "d/e"], dtype=object)),
        ("python-stored str", pandas.Series(strings, dtype=python_str)),
        ("empty series", pandas.Series([], dtype="float64")),
        ("empty str series", pandas.Series([], dtype="str", name="s")),
        ("one row", pandas.DataFrame({"a": [1.5]})),
        ("series named values", pandas.Series([1, 2], name="values")),
        ("str index", pandas.Series([1.0, 2.0], index=["a/b", 'q"uote'])),
        ("object index", pandas.Series([1, 2], index=pandas.Index(["x", "y"], dtype=object, name='é/"'))),
        ("int index named index", pandas.Series([1, 2], index=pandas.Index([3, 4], name="index"))),
        ("float index", pandas.Series(range(len(floats)), index=floats)),
        ("bool index", pandas.Series([1, 2], index=[True, False])),
        ("stepped range index", pandas.Series(range(10), index=range(5, 105, 10))),
        ("repeated index (no primary key)", pandas.Series([1.0, 2.0, 3.0], index=[1, 1, 2])),
        ("empty frame", pandas.DataFrame({"a": [], "b": []})),
        ("a column named index, the index named", pandas.DataFrame({"index": [1, 2]}, index=[5, 6]).rename_axis("i")),
        ("the bench's table", pandas.DataFrame({"i": range(1000), "s": [f"row {i}" for i in range(1000)]})),
        ("every dtype", pandas.DataFrame(mixed)),
        ("named columns", pandas.DataFrame({"a": [1.0], "b": ["x"]}).rename_axis(columns="c")),
        ("odd column names", pandas.DataFrame([range(len(odd_names))], columns=odd_names)),
        ("float frame", pandas.DataFrame(rng.random((1000, 3)), columns=list("abc"))),
    ]


@unittest.skipUnless(HAVE_PANDAS, "pandas is not installed")
class QuickTableJsonTest(unittest.TestCase):
    def test_its_text_is_pandas_text_byte_for_byte(self):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an index named "index" is not round-trippable
            for what, obj in table_corpus():
                with self.subTest(what):
                    self.assertEqual(worker.quick_table_json(obj), obj.to_json(orient="table"))

    def test_other_shapes_are_left_to_pandas(self):
        import numpy
        import pandas

        class Sub(pandas.DataFrame):
            pass

        two = pandas.Index([1, 2])
        left = [
            ("datetimes", pandas.Series(pandas.date_range("2026-01-01", periods=2))),
            ("timedeltas", pandas.Series(pandas.to_timedelta([1, 2], unit="s"))),
            ("datetime index", pandas.Series([1, 2], index=pandas.date_range("2026-01-01", periods=2))),
            ("categorical", pandas.Series(["a", "b"], dtype="category")),
            ("multiindex", pandas.Series([1, 2], index=pandas.MultiIndex.from_tuples([("a", 1), ("b", 2)]))),
            ("multiindex columns", pandas.DataFrame([[1]], columns=pandas.MultiIndex.from_tuples([("a", "b")]))),
            ("nullable ints", pandas.Series([1, None], dtype="Int64")),
            ("nullable bools", pandas.Series([True, None], dtype="boolean")),
            ("string with NA", pandas.Series(["a", None], dtype="string")),
            ("float32", pandas.Series([0.1], dtype="float32")),
            ("uint64", pandas.Series([2**64 - 1], dtype="uint64")),
            ("mixed objects", pandas.Series(["a", 1], dtype=object)),
            ("numpy strings in objects", pandas.Series([numpy.str_("a")], dtype=object)),
            ("a subclass", Sub({"a": [1]})),
            # Past about ten columns pandas' writer is the faster (worker.QUICK_TABLE_MAX_COLUMNS).
            ("a wide frame", pandas.DataFrame({f"c{i}": [0.5] for i in range(9)})),
            ("a date column beside numbers",
             pandas.DataFrame({"x": [1.0, 2.0], "when": pandas.date_range("2026-01-01", periods=2)})),
            ("a series named empty", pandas.Series([1], name="")),
            ("a series named 0", pandas.Series([1], name=0)),
            ("a series named 1", pandas.Series([1], name=1)),
            ("integer column names", pandas.DataFrame([[1, 2]])),
            ("repeated column names", pandas.DataFrame([[1, 2]], columns=["a", "a"])),
            ("a column named as the index", pandas.DataFrame({"index": [1, 2]})),
            ("a series named as its index", pandas.Series([1, 2], name="k", index=two.rename("k"))),
            ("an index named empty", pandas.Series([1, 2], index=two.rename(""))),
            ("an index named 0", pandas.Series([1, 2], index=two.rename(0))),
            ("a name with NUL", pandas.DataFrame({"a\x00b": [1]})),
            ("DEL", pandas.Series(["a\x7f"])),
            ("a lone surrogate", pandas.Series(["a\ud800"], dtype=object)),
            ("no columns", pandas.DataFrame(index=range(3))),
        ]
        for what, obj in left:
            with self.subTest(what):
                self.assertIsNone(worker.quick_table_json(obj))


class FigurePngTest(unittest.TestCase):
    """A figure is shown as savefig(bbox_inches="tight") would make it (Jupyter's inline
    backend), from one draw where the figure's own canvas holds all of it."""

    def setUp(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot

        self.plt = matplotlib.pyplot
        self.addCleanup(self.plt.close, "all")

    def png_and_draws(self, make):
        figure = make()
        draws = []
        figure.canvas.mpl_connect("draw_event", draws.append)
        png = base64.b64decode(worker.figure_png(figure))
        return png, len(draws)

    def savefig_png(self, make):
        figure = make()
        buf = io.BytesIO()
        figure.savefig(buf, format="png", bbox_inches="tight")
        self.plt.close(figure)
        return buf.getvalue()

    def test_a_plot_is_drawn_once_at_savefigs_size_and_what_lies_beyond_the_figure_is_kept(self):
        def plot():
            figure = self.plt.figure()
            self.plt.plot(range(1000), [i % 7 for i in range(1000)])
            self.plt.title("gyp")
            return figure

        png, draws = self.png_and_draws(plot)
        self.assertEqual(draws, 1)
        self.assertEqual(png_size(png), png_size(self.savefig_png(plot)))
        self.assertEqual(self.plt.get_fignums(), [])

        def legend_outside():
            figure = self.plt.figure()
            self.plt.plot([1, 2], label="a label placed outside the axes")
            self.plt.legend(bbox_to_anchor=(1.05, 1), loc="upper left")
            return figure

        png, _ = self.png_and_draws(legend_outside)
        width, height = png_size(png)
        self.assertEqual((width, height), png_size(self.savefig_png(legend_outside)))
        self.assertGreater(width, 640)  # wider than the figure (6.4 in at 100 dpi): the legend


def png_size(png):
    """(width, height) from a PNG's IHDR chunk."""
    import struct

    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


if __name__ == "__main__":
    unittest.main()
