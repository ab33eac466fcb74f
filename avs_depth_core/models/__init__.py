"""Networks: MiDaS-small encoder-decoder, ResNet encoders, audio encoder, fusion, ZoeDepth metric bins, AVS-Net, Monodepth2."""
