"""A DES-like survey simulator (GalSim profiles) writing the layout of a finished DESaccess cutout job.

``simulate_survey`` is the entry point; ``simulate_object`` renders one cutout in memory (for tests).
"""

from galmoco.sim.population import CLASSES, PopulationConfig
from galmoco.sim.render import ObservingConfig
from galmoco.sim.simulate import SimSpec, simulate_object, simulate_survey

__all__ = ["CLASSES", "ObservingConfig", "PopulationConfig", "SimSpec", "simulate_object", "simulate_survey"]
