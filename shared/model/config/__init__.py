"""The ``slipway.yaml`` configuration: pydantic models (the single source of its JSON Schema) and
the loader that reports every problem as ``file:line: field.path: message``.

The code lives in submodules named after what they do; this package re-exports the names the
rest of Slipway imports, so importers say ``from shared.model.config import ...``:

- ``base``: the strict base model and ``LocatedValueError``;
- ``targets``: one ``targets:`` entry (``Target``, ``TagRule``, ``TargetCache``);
- ``cache_storage``: ``cache:`` (``CacheStorage``, the storage account it signs as);
- ``settings``: ``tools:``, ``run:``, ``rebuilds:``;
- ``slipway_config``: the whole document (``SlipwayConfig``) and its JSON Schema;
- ``problems``: ``ConfigProblem``/``ConfigError`` and field paths;
- ``loader``: YAML → models with located problems, and its limits;
- ``validation_messages``: pydantic's errors reworded at document paths.

The renderer's verdict on each target (``config validate``, ``doctor``) is the app's:
``shared.app.config_check.check_config_file``.
"""

from shared.model.config.base import LocatedValueError as LocatedValueError
from shared.model.config.cache_storage import STORAGE_ACCOUNT_NAME_RE as STORAGE_ACCOUNT_NAME_RE
from shared.model.config.cache_storage import CacheStorage as CacheStorage
from shared.model.config.cache_storage import storage_account_name as storage_account_name
from shared.model.config.loader import CONFIG_SETTING as CONFIG_SETTING
from shared.model.config.loader import DEFAULT_CONFIG_FILE as DEFAULT_CONFIG_FILE
from shared.model.config.loader import CheckedConfig as CheckedConfig
from shared.model.config.loader import ConfigCheck as ConfigCheck
from shared.model.config.loader import config_path as config_path
from shared.model.config.loader import load_config as load_config
from shared.model.config.loader import parse_checked as parse_checked
from shared.model.config.loader import parse_config as parse_config
from shared.model.config.loader import read_config_text as read_config_text
from shared.model.config.problems import ConfigError as ConfigError
from shared.model.config.problems import ConfigProblem as ConfigProblem
from shared.model.config.problems import FieldPath as FieldPath
from shared.model.config.problems import PathPart as PathPart
from shared.model.config.problems import format_path as format_path
from shared.model.config.pull_requests import REGISTRY_TOKEN_SETTING_PREFIX as REGISTRY_TOKEN_SETTING_PREFIX
from shared.model.config.settings import RebuildSettings as RebuildSettings
from shared.model.config.settings import RunSettings as RunSettings
from shared.model.config.settings import ToolImages as ToolImages
from shared.model.config.slipway_config import CONFIG_SCHEMA_ID as CONFIG_SCHEMA_ID
from shared.model.config.slipway_config import SlipwayConfig as SlipwayConfig
from shared.model.config.slipway_config import config_json_schema as config_json_schema
from shared.model.config.targets import DEFAULT_PLATFORMS as DEFAULT_PLATFORMS
from shared.model.config.targets import GIT_TOKEN_SETTING_PREFIX as GIT_TOKEN_SETTING_PREFIX
from shared.model.config.targets import TagRule as TagRule
from shared.model.config.targets import Target as Target
from shared.model.config.targets import TargetCache as TargetCache
from shared.model.config.targets import default_image_tags as default_image_tags
