"""ScienceWorld for eef: ``SciWorldEnv`` (see ``eef.envs.sciworld.env``) and its building blocks."""

from eef.envs.sciworld.env import NO_ACTION, SciWorldConfig, SciWorldEnv, available
from eef.envs.sciworld.jvm import JavaNotFoundError, JvmOptions, Simulator, SimulatorDiedError
from eef.envs.sciworld.protocol import ProtocolError

__all__ = ["SciWorldEnv", "SciWorldConfig", "NO_ACTION", "available", "JavaNotFoundError",
           "JvmOptions", "Simulator", "SimulatorDiedError", "ProtocolError"]
