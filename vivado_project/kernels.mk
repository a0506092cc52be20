# kernels.mk: kernel names, sources and build settings for vivado_project/Makefile (GENERATED from flightllm_overlay/hw/design.py, target u280; do not edit)
# Regenerate: python -m flightllm_overlay.hw.vitis --write   (or: make -C vivado_project regen)

FLIGHTLLM_TARGET := u280
FLIGHTLLM_PLATFORM := xilinx_u280_gen3x16_xdma_1_202211_1
FLIGHTLLM_VITIS_VERSION := 2023.1
FLIGHTLLM_XRT_VERSION := 2.15
FLIGHTLLM_CLOCK_MHZ := 225
FLIGHTLLM_CLOCK_HZ := 225000000
FLIGHTLLM_LINK_CFG := flightllm_u280.cfg
FLIGHTLLM_XCLBIN := ../flightllm_overlay/bitstreams/flightllm.xclbin

# HLS sources: one file per kernel in SRC_DIR, which also holds the generated header.
# The kernels share the unit-queue protocol and operand checks (scheduler.cpp) and
# the scheduler dispatches to the units' execute functions, so every kernel's v++ -c
# compiles its own file first and the others after it (-k picks the top function).
SRC_DIR ?= ../flightllm_overlay/src
FLIGHTLLM_KERNELS := scheduler mpe misc memctrl
FLIGHTLLM_SRC_scheduler = $(SRC_DIR)/scheduler.cpp $(SRC_DIR)/mpe.cpp $(SRC_DIR)/misc.cpp $(SRC_DIR)/memctrl.cpp
FLIGHTLLM_SRC_mpe = $(SRC_DIR)/mpe.cpp $(SRC_DIR)/scheduler.cpp $(SRC_DIR)/misc.cpp $(SRC_DIR)/memctrl.cpp
FLIGHTLLM_SRC_misc = $(SRC_DIR)/misc.cpp $(SRC_DIR)/scheduler.cpp $(SRC_DIR)/mpe.cpp $(SRC_DIR)/memctrl.cpp
FLIGHTLLM_SRC_memctrl = $(SRC_DIR)/memctrl.cpp $(SRC_DIR)/scheduler.cpp $(SRC_DIR)/mpe.cpp $(SRC_DIR)/misc.cpp

# Compute units (instances) of each kernel, as in the link configuration
FLIGHTLLM_CUS_scheduler := scheduler
FLIGHTLLM_CUS_mpe := mpe_0 mpe_1 mpe_2
FLIGHTLLM_CUS_misc := misc_0 misc_1 misc_2
FLIGHTLLM_CUS_memctrl := memctrl_0 memctrl_1 memctrl_2
