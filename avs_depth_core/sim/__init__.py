"""Synthetic audio-visual worlds: indoor scenes, camera rendering (RGB + metric depth), binaural echoes, trajectories.

    from avs_depth_core.sim.world import SimWorld, SimFrame, PRESETS
    world = SimWorld(preset="bv2", seed=0, height=256, width=512)
    frame = world.sequence(0).frame(0)

Modules: presets (the numbers of bv1 / bv2 worlds), textures, scene (rooms, boxes, lights, surfaces), render (ray
casting), acoustics (image sources + box and diffuse returns + reverberation), trajectory (robot paths), world (the public
API), dynamic (DynamicWorld: moving objects, instance maps; `simulate --dynamic`), record (`avs-depth simulate`, rosbag2
output).
"""
