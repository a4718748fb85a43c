"""Stand-in for comfy_api.latest: the V3 node schema (`io`) and `ComfyExtension`, as in ComfyUI 0.3.59/0.8.0.

Only what the pack uses. `node_info(cls)` renders a node the way ComfyUI's /object_info does (V1 view of a
V3 schema); tests/test_comfyui_integration.py checks that rendering against a real ComfyUI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import SimpleNamespace


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class _Input:
    io_type = ""

    def __init__(self, id: str, display_name=None, optional=False, tooltip=None, default=None, **extra):
        self.id, self.display_name, self.optional, self.tooltip, self.default = (
            id,
            display_name,
            optional,
            tooltip,
            default,
        )
        self.extra = extra

    def as_dict(self) -> dict:
        return _prune({"display_name": self.display_name, "tooltip": self.tooltip, "default": self.default}) | _prune(
            self.extra
        )


class _Output:
    io_type = ""

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def _comfytype(io_type: str) -> type:
    return type(
        io_type,
        (),
        {
            "io_type": io_type,
            "Input": type("Input", (_Input,), {"io_type": io_type}),
            "Output": type("Output", (_Output,), {"io_type": io_type}),
        },
    )


class _Combo(_Input):
    io_type = "COMBO"

    def __init__(self, id: str, options=None, display_name=None, optional=False, tooltip=None, default=None):
        super().__init__(id, display_name, optional, tooltip, default)
        self.options = options

    def as_dict(self) -> dict:
        return super().as_dict() | {"multiselect": False, "options": self.options}


class _Number(_Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, default=None, min=None, max=None, step=None):
        super().__init__(id, display_name, optional, tooltip, default, min=min, max=max, step=step)


class Schema:
    def __init__(self, node_id, display_name=None, category="sd", inputs=None, outputs=None, description=""):
        self.node_id, self.display_name, self.category = node_id, display_name, category
        self.inputs, self.outputs, self.description = inputs or [], outputs or [], description


class NodeOutput:
    def __init__(self, *args, ui=None):
        self.args, self.ui = args, ui

    @property
    def result(self):
        return self.args or None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode(ABC):
    @classmethod
    @abstractmethod
    def define_schema(cls) -> Schema: ...

    @classmethod
    @abstractmethod
    def execute(cls, **kwargs) -> NodeOutput: ...


def Custom(io_type: str) -> type:
    return _comfytype(io_type)


io = SimpleNamespace(
    ComfyNode=ComfyNode,
    Schema=Schema,
    NodeOutput=NodeOutput,
    Custom=Custom,
    Combo=SimpleNamespace(Input=_Combo, io_type="COMBO"),
    Float=SimpleNamespace(Input=type("Input", (_Number,), {"io_type": "FLOAT"}), io_type="FLOAT"),
    Int=SimpleNamespace(Input=type("Input", (_Number,), {"io_type": "INT"}), io_type="INT"),
    Latent=_comfytype("LATENT"),
)


class ComfyExtension(ABC):
    @abstractmethod
    async def get_node_list(self) -> list[type[ComfyNode]]: ...


def node_info(cls: type[ComfyNode]) -> dict:
    """The /object_info entry ComfyUI serves for a V3 node (the fields the pack and its tests rely on)."""
    schema = cls.define_schema()
    sections = {"required": {}, "optional": {}}
    for i in schema.inputs:
        sections["optional" if i.optional else "required"][i.id] = (i.io_type, i.as_dict())
    sections = {k: v for k, v in sections.items() if v or k == "required"}
    return {
        "input": sections,
        "input_order": {k: list(v) for k, v in sections.items()},
        "output": [o.io_type for o in schema.outputs],
        "output_name": [o.display_name or o.io_type for o in schema.outputs],
        "output_tooltips": [o.tooltip for o in schema.outputs],
        "name": schema.node_id,
        "display_name": schema.display_name,
        "category": schema.category,
        "description": schema.description,
    }
