"""Loading and rendering prompts/ and templates/ (installed as agent.prompts, agent.templates),
and fencing the data that goes into a prompt.

One Jinja environment renders both: strict (a missing variable is an error, not an empty
string), no autoescaping (the output is a prompt or Python, not HTML), block tags trimmed so
the YAML prompts read like their output. The templates have no block tags, so trimming does not
touch them, and the trailing newline a file ends with is kept.
"""

from __future__ import annotations

import re
from importlib import resources

import jinja2
import yaml

ENVIRONMENT = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


def load_prompt(name: str) -> dict[str, jinja2.Template]:
    """The parts (system, user, ...) of prompts/<name>.yaml as templates."""
    source = resources.files("agent.prompts").joinpath(f"{name}.yaml").read_text("utf-8")
    # A YAML block scalar ends with a newline that is not part of the prompt.
    parts = yaml.safe_load(source).items()
    return {part: ENVIRONMENT.from_string(text.removesuffix("\n")) for part, text in parts}


def template_source(role: str) -> str:
    """templates/<role>.py.j2 as written."""
    return resources.files("agent.templates").joinpath(f"{role}.py.j2").read_text(encoding="utf-8")


def render_template(role: str, **variables: object) -> str:
    return ENVIRONMENT.from_string(template_source(role)).render(**variables)


def escape_tag(text: str, tag: str) -> str:
    """Neutralise every <tag ...> and </tag> inside data (a sample, a model card) so it can
    neither close the block it is fenced in nor forge another one."""
    pattern = re.compile(rf"<\s*(/?)\s*{re.escape(tag)}\b([^>]*)>", re.IGNORECASE)
    return pattern.sub(lambda m: f"&lt;{m.group(1)}{tag}{m.group(2)}&gt;", text)
