"""The pack imports outside ComfyUI and every node keeps ComfyUI's node contract."""
import inspect

VALID_TYPES = {
    "INT", "FLOAT", "STRING", "BOOLEAN", "IMAGE", "MASK", "LATENT", "CONDITIONING", "CLIP_VISION_OUTPUT",
    "MODEL", "VAE", "CLIP", "CLIP_VISION", "COMBO", "AUDIO", "*",
}
OUR_PREFIX = "WANANIMATE_"


def _type_ok(spec) -> bool:
    kind = spec[0]
    if isinstance(kind, list):
        return all(isinstance(v, str) for v in kind)
    if not isinstance(kind, str):
        return False
    # a union "A,B" (ComfyUI's validate_node_input accepts any of its members)
    return all(part in VALID_TYPES or part.startswith(OUR_PREFIX) for part in kind.split(","))


def test_pack_exports(pack):
    assert isinstance(pack.NODE_CLASS_MAPPINGS, dict) and pack.NODE_CLASS_MAPPINGS
    assert pack.WEB_DIRECTORY == "./web"
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)


def test_every_node_keeps_the_contract(pack):
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name.startswith("WanAnimate"), name
        assert isinstance(inspect.getattr_static(cls, "INPUT_TYPES"), classmethod), name
        inputs = cls.INPUT_TYPES()
        assert set(inputs) <= {"required", "optional", "hidden"} and "required" in inputs, name
        for group in ("required", "optional"):
            for input_name, spec in inputs.get(group, {}).items():
                assert isinstance(spec, tuple) and _type_ok(spec), f"{name}.{input_name}: {spec!r}"
                if len(spec) > 1:
                    assert isinstance(spec[1], dict), f"{name}.{input_name}"
        assert isinstance(cls.RETURN_TYPES, tuple), name
        for rtype in cls.RETURN_TYPES:
            assert rtype in VALID_TYPES or rtype.startswith(OUR_PREFIX), f"{name} returns {rtype}"
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        assert len(names) == len(cls.RETURN_TYPES), name
        assert callable(getattr(cls, cls.FUNCTION, None)), f"{name}.FUNCTION={cls.FUNCTION}"
        assert cls.CATEGORY == "WanAnimate" or cls.CATEGORY.startswith("WanAnimate/"), name


def test_display_names_unique(pack):
    names = list(pack.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert len(names) == len(set(names))


def test_requirements_match_pyproject_and_leave_torch_alone():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = [line.strip() for line in (root / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert sorted(listed) == sorted(project["project"]["dependencies"])
    assert not any(name.split("=")[0].split(">")[0].split("<")[0] in ("torch", "torchvision", "torchaudio")
                   for name in listed)
    # onnxruntime and onnxruntime-gpu share one module: a listed CPU build would be put back over a GPU one
    assert not any(name.startswith("onnxruntime") for name in listed)
    assert {"PublisherId", "DisplayName", "Icon"} <= set(project["tool"]["comfy"])
    assert (root / project["tool"]["comfy"]["Icon"]).is_file()


def test_sources_parse_with_the_oldest_python_that_pyproject_allows():
    import ast
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    floor = tomllib.loads((root / "pyproject.toml").read_text())["project"]["requires-python"]
    major, minor = (int(part) for part in re.fullmatch(r">=(\d+)\.(\d+)", floor).groups())
    assert (major, minor) >= (3, 11), f"requires-python {floor} allows a Python without tomllib, which the tests import"
    sources = [p for p in root.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    assert len(sources) > 50
    for path in sources:
        ast.parse(path.read_text(), filename=str(path), feature_version=(major, minor))
