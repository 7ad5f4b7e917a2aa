"""WebShop (Yao et al. 2022), text mode, over the 1,000-product catalogue."""

from eef.envs.webshop.env import WebShopEnv

__all__ = ["WebShopEnv"]
